"""Within-class spread of generated images relative to real ones, with bootstrap CIs.

The spread of a set of vectors is its mean pairwise Euclidean distance (over pairs of
distinct items). For one class, ``spread(generated) / spread(real)`` is 1.0 when the
generator varies as much as real images of that class do, and below 1.0 when it
collapses towards prototypes. The overall figure is the mean of the ten per-class
ratios. Confidence intervals are percentile bootstraps: each replicate resamples the
items of every set with replacement (pairs of an item with its own copy are left out,
so a replicate's spread is a mean over distinct items' pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ratio:
    """A spread ratio with its 95% percentile-bootstrap interval and the sample sizes."""

    value: float
    low: float
    high: float
    n_generated: int
    n_real: int

    def as_dict(self) -> dict[str, float | int]:
        """Rounded for a report or a model card."""
        return {
            "ratio": round(self.value, 4),
            "ci95": [round(self.low, 4), round(self.high, 4)],
            "n_generated": self.n_generated,
            "n_real": self.n_real,
        }


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances (N, N) between the rows of ``x`` (N, D), in float64."""
    x64 = x.astype(np.float64).reshape(len(x), -1)
    squared = (x64 * x64).sum(axis=1)
    gram = squared[:, None] + squared[None, :] - 2.0 * x64 @ x64.T
    return np.sqrt(np.clip(gram, 0.0, None))


def _weighted_spreads(distances: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean distance over pairs of distinct items for each row of ``counts`` (R, N) (item
    multiplicities of a resample; the diagonal of ``distances`` is zero)."""
    pair_sum = ((counts @ distances) * counts).sum(axis=1)
    pairs = counts.sum(axis=1) ** 2 - (counts * counts).sum(axis=1)
    return pair_sum / pairs


def _resample_counts(n: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Item multiplicities (R, n) of ``replicates`` resamples of n items with replacement."""
    draws = rng.integers(0, n, size=(replicates, n))
    counts = np.zeros((replicates, n))
    np.add.at(counts, (np.arange(replicates)[:, None], draws), 1.0)
    return counts


def _spread(distances: np.ndarray) -> float:
    """Mean over pairs of distinct items of a distance matrix (N >= 2)."""
    n = len(distances)
    return float(distances.sum() / (n * (n - 1)))


def spread_ratios(
    generated: dict[int, np.ndarray], real: dict[int, np.ndarray], replicates: int = 1000, seed: int = 0
) -> tuple[dict[int, Ratio], Ratio]:
    """Per-class ``spread(generated[c]) / spread(real[c])`` and their mean over classes.

    ``generated`` and ``real`` map each class to its vectors (N_c, D); both need the
    same classes, each with at least 2 items. The overall interval comes from the same
    replicates as the per-class ones (each replicate resamples every class).
    """
    if generated.keys() != real.keys():
        raise ValueError(f"classes differ: generated {sorted(generated)}, real {sorted(real)}")
    rng = np.random.default_rng(seed)
    per_class: dict[int, Ratio] = {}
    replicate_ratios = []
    for c in sorted(generated):
        gen_d, real_d = pairwise_distances(generated[c]), pairwise_distances(real[c])
        n_gen, n_real = len(gen_d), len(real_d)
        value = _spread(gen_d) / _spread(real_d)
        boot = _weighted_spreads(gen_d, _resample_counts(n_gen, replicates, rng)) / _weighted_spreads(
            real_d, _resample_counts(n_real, replicates, rng)
        )
        replicate_ratios.append(boot)
        low, high = np.percentile(boot, [2.5, 97.5])
        per_class[c] = Ratio(float(value), float(low), float(high), n_gen, n_real)
    overall_boot = np.mean(replicate_ratios, axis=0)
    low, high = np.percentile(overall_boot, [2.5, 97.5])
    overall = Ratio(
        float(np.mean([r.value for r in per_class.values()])),
        float(low),
        float(high),
        sum(r.n_generated for r in per_class.values()),
        sum(r.n_real for r in per_class.values()),
    )
    return per_class, overall
