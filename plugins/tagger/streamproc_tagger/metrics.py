"""Measurements shared by training, calibration and evaluation (no training or I/O here).

- classification: ``predict_logits``, ``classification_metrics`` (accuracy, per-class
  accuracy, ECE, NLL), ``fit_temperature``, ``majority_baseline``;
- open-set: ``auroc`` and ``false_accept_rate`` at the operating point where at most
  ``OPERATING_REJECTION`` of the in-distribution items are rejected;
- intervals: ``bootstrap_ci`` (percentile, optionally clustered by source) and ``wilson_ci``.

Scores follow one convention: higher means "more like the clothing the model knows";
an item is rejected when its score is below the threshold.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from streamproc_tagger.data import CLASS_LABELS, ImageSet, to_float

ECE_BINS = 15
OPERATING_REJECTION = 0.02
"""The operating point of the open-set figures: at most 2% of real test items rejected."""
BOOTSTRAP_REPS = 1000


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits (N, C) of ``model`` (put in eval mode) over uint8 images (N, 1, 28, 28)."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [
        model(to_float(images[i : i + batch_size]).to(device)).float().cpu() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE of top-1 confidence over ``bins`` equal-width bins in (0, 1]."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0.0, 1.0, bins + 1)
    ece = torch.zeros(())
    for lo, hi in itertools.pairwise(edges.tolist()):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            gap = (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
            ece += gap * in_bin.float().mean()
    return float(ece)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (LBFGS)."""
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict[str, Any]:
    """Accuracy, per-class accuracy, ECE (15 bins) and NLL of logits against labels."""
    probs = torch.softmax(logits / temperature, dim=1)
    predicted = probs.argmax(dim=1)
    per_class = {
        name: round(float((predicted[labels == c] == c).float().mean()), 4) for c, name in enumerate(CLASS_LABELS)
    }
    return {
        "accuracy": round(float((predicted == labels).float().mean()), 4),
        "per_class_accuracy": per_class,
        "ece_15_bins": round(expected_calibration_error(probs, labels), 4),
        "nll": round(float(nn.functional.cross_entropy(logits / temperature, labels)), 4),
    }


def majority_baseline(train: ImageSet, test: ImageSet) -> dict[str, float]:
    """Accuracy of always predicting the most frequent training class."""
    majority = int(torch.bincount(train.labels).argmax())
    return {"accuracy": round(float((test.labels == majority).float().mean()), 4)}


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling in- from out-of-distribution scores (higher = in);
    ties count one half (Mann-Whitney U)."""
    values = np.concatenate([in_scores, out_scores])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2.0) / (n_in * n_out))


def operating_threshold(in_scores: np.ndarray, max_rejected: float = OPERATING_REJECTION) -> float:
    """The highest threshold that rejects (score < threshold) at most ``max_rejected`` of ``in_scores``."""
    ordered = np.sort(in_scores)
    return float(ordered[int(np.floor(max_rejected * len(ordered)))])


def false_accept_rate(
    in_scores: np.ndarray, out_scores: np.ndarray, max_rejected: float = OPERATING_REJECTION
) -> float:
    """Fraction of ``out_scores`` accepted at ``operating_threshold(in_scores, max_rejected)``."""
    return float(np.mean(out_scores >= operating_threshold(in_scores, max_rejected)))


def pooled_auroc(in_scores: np.ndarray, out_groups: list[np.ndarray]) -> float:
    """AUROC against all out-of-distribution groups pooled."""
    return auroc(in_scores, np.concatenate(out_groups))


def pooled_false_accept(in_scores: np.ndarray, out_groups: list[np.ndarray]) -> float:
    """False-accept rate at the operating point, all groups pooled."""
    return false_accept_rate(in_scores, np.concatenate(out_groups))


def bootstrap_ci(
    statistic: Callable[[np.ndarray, list[np.ndarray]], float],
    in_scores: np.ndarray,
    out_groups: list[np.ndarray],
    by_source: bool = False,
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``statistic(in, out_groups)``. In-distribution
    items are resampled; out-of-distribution items within each group, and with
    ``by_source`` the groups (sources) themselves too (a cluster bootstrap)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        resampled_in = in_scores[rng.integers(0, len(in_scores), len(in_scores))]
        groups = [out_groups[i] for i in rng.integers(0, len(out_groups), len(out_groups))] if by_source else out_groups
        resampled_out = [g[rng.integers(0, len(g), len(g))] for g in groups]
        values.append(statistic(resampled_in, resampled_out))
    low, high = np.percentile(values, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def wilson_ci(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n``."""
    if n == 0:
        return 0.0, 1.0
    z = 1.959964
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 4), round(centre + half, 4)
