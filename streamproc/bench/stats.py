"""Statistics of the benchmark's measurements: percentiles, steady rates, histogram shapes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """Count, mean, p50/p95/p99 and max of latencies in milliseconds (rounded to 0.1 ms)."""
    if not values_ms:
        return {"count": 0}
    return {
        "count": len(values_ms),
        "mean_ms": round(sum(values_ms) / len(values_ms), 1),
        "p50_ms": round(percentile(values_ms, 0.50), 1),
        "p95_ms": round(percentile(values_ms, 0.95), 1),
        "p99_ms": round(percentile(values_ms, 0.99), 1),
        "max_ms": round(max(values_ms), 1),
    }


def steady_rate(completions: Sequence[float], low: float = 0.1, high: float = 0.9) -> float | None:
    """Events per second between the ``low`` and ``high`` shares of completions.

    Leaves out the ramp-up (first batches, cold caches) and the tail (the last
    stragglers), like the offline sweep leaves out its warm-up batch. ``None`` with
    fewer than 10 completions or no spread in time.
    """
    if len(completions) < 10:
        return None
    ordered = sorted(completions)
    first = int(low * (len(ordered) - 1))
    last = int(high * (len(ordered) - 1))
    span = ordered[last] - ordered[first]
    if span <= 0:
        return None
    return (last - first) / span


def histogram_counts(cumulative: Sequence[tuple[float, float]]) -> list[dict[str, float]]:
    """Prometheus cumulative buckets ``(le, count)`` -> per-bucket counts ``{"le", "count"}``."""
    out = []
    previous = 0.0
    for le, count in sorted(cumulative):
        out.append({"le": le, "count": max(0.0, count - previous)})
        previous = count
    return out


def histogram_quantile(cumulative: Sequence[tuple[float, float]], q: float) -> float | None:
    """The upper edge of the bucket holding the ``q`` quantile (``None`` when empty)."""
    ordered = sorted(cumulative)
    if not ordered or ordered[-1][1] <= 0:
        return None
    target = q * ordered[-1][1]
    for le, count in ordered:
        if count >= target:
            return le
    return ordered[-1][0]


def subtract_buckets(
    after: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Bucket counts of a window: the scrape after minus the scrape before."""
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]
