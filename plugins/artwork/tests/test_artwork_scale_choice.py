"""The rule that picks the shipped latent scale from a scan (``evaluate.choose_scale``)."""

from __future__ import annotations

from typing import Any

from streamproc_artwork.evaluate import choose_scale


def row(scale: float, agreement: float, spread: float) -> dict[str, Any]:
    """A scan row with the half-intervals of 10,000 samples (agreement 0.004, spread 0.013)."""
    return {
        "latent_scale": scale,
        "agreement": {"rate": agreement, "ci95": [agreement - 0.004, agreement + 0.004], "n": 10_000},
        "spread_judge_features": {"ratio": spread, "ci95": [spread - 0.013, spread + 0.013]},
    }


def test_the_chosen_scale_clears_both_bars_by_the_widest_margin_not_the_largest_that_clears_one() -> None:
    scan = [row(0.75, 0.961, 0.873), row(0.8, 0.954, 0.910), row(0.82, 0.951, 0.925), row(0.85, 0.945, 0.946)]
    # 0.82 is the largest scale with agreement >= 0.95, but only by 0.25 half-intervals;
    # 0.8 clears agreement by 1.0 and spread by 0.77 half-intervals.
    assert choose_scale(scan) == 0.8


def test_when_no_scale_clears_both_bars_the_one_missing_by_the_least_is_chosen() -> None:
    scan = [row(0.7, 0.965, 0.85), row(0.8, 0.949, 0.899), row(0.9, 0.93, 0.97)]
    assert choose_scale(scan) == 0.8
