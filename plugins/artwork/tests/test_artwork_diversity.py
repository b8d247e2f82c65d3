"""The within-class spread ratio: 1.0 for sets as varied as the reference, lower when collapsed."""

from __future__ import annotations

import numpy as np
import pytest
from streamproc_artwork.diversity import pairwise_distances, spread_ratios


def test_pairwise_distances_are_euclidean() -> None:
    x = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert np.allclose(pairwise_distances(x), [[0, 5, 10], [5, 0, 5], [10, 5, 0]])


def test_a_set_shrunk_towards_its_mean_has_the_shrink_factor_as_ratio() -> None:
    rng = np.random.default_rng(0)
    real = {c: rng.normal(c, 1.0, (300, 16)) for c in range(3)}
    fresh = {c: rng.normal(c, 1.0, (200, 16)) for c in range(3)}
    collapsed = {c: c + 0.6 * (x - c) for c, x in fresh.items()}
    per_class, overall = spread_ratios(collapsed, real, replicates=300)
    assert overall.value == pytest.approx(0.6, abs=0.02)
    assert overall.low < overall.value < overall.high and overall.high - overall.low < 0.05
    assert (overall.n_generated, overall.n_real) == (600, 900)
    _, same = spread_ratios(fresh, real, replicates=300)
    assert same.low < 1.0 < same.high  # as varied as the reference: 1.0 is inside the interval
    assert all(r.low < 0.6 * 1.05 and r.high > 0.6 * 0.95 for r in per_class.values())


def test_a_single_prototype_per_class_has_zero_spread() -> None:
    rng = np.random.default_rng(1)
    real = {0: rng.normal(0.0, 1.0, (50, 4))}
    _, overall = spread_ratios({0: np.ones((50, 4))}, real, replicates=50)
    assert overall.value == 0.0 and overall.high == 0.0


def test_classes_must_match() -> None:
    with pytest.raises(ValueError, match="classes differ"):
        spread_ratios({0: np.zeros((2, 1))}, {1: np.zeros((2, 1))})
