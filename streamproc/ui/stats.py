"""Per-plugin throughput and latency over the last minutes, from the results read.

Results are counted in buckets of ``BUCKET_S`` seconds by their ``result_ts`` (the worker's
clock when the result was made); ``WINDOW_BUCKETS`` buckets are kept. Latency is
``result_ts - event_ts`` (the producer's clock to the result), sampled: each bucket keeps
its first ``SAMPLES_PER_BUCKET`` latencies, so percentiles cost the same at any rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BUCKET_S = 10
WINDOW_BUCKETS = 30
"""Five minutes of ten-second buckets."""
SAMPLES_PER_BUCKET = 200


@dataclass
class _Bucket:
    start_s: int
    count: int = 0
    latencies_ms: list[int] = field(default_factory=list)


class PluginStats:
    """Counts and latency samples per plugin, over the last ``WINDOW_BUCKETS`` buckets."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[int, _Bucket]] = {}

    def add(self, plugin: str, event_ts: int, result_ts: int) -> None:
        """Count one result; one older than the window is ignored."""
        start = result_ts // 1000 // BUCKET_S * BUCKET_S
        buckets = self._buckets.setdefault(plugin, {})
        if buckets and start <= max(buckets) - WINDOW_BUCKETS * BUCKET_S:
            return
        bucket = buckets.get(start)
        if bucket is None:
            bucket = buckets[start] = _Bucket(start)
            oldest = start - WINDOW_BUCKETS * BUCKET_S
            for stale in [s for s in buckets if s <= oldest]:
                del buckets[stale]
        bucket.count += 1
        if len(bucket.latencies_ms) < SAMPLES_PER_BUCKET:
            bucket.latencies_ms.append(max(0, result_ts - event_ts))

    def summary(self, now_ms: int) -> list[dict[str, Any]]:
        """Per plugin: results per second over the last minute, results per bucket over the
        window (oldest first, for a sparkline), and latency percentiles over the window."""
        now_bucket = now_ms // 1000 // BUCKET_S * BUCKET_S
        starts = [now_bucket - i * BUCKET_S for i in range(WINDOW_BUCKETS - 1, -1, -1)]
        rows = []
        for plugin in sorted(self._buckets):
            buckets = self._buckets[plugin]
            counts = [buckets[s].count if s in buckets else 0 for s in starts]
            samples = sorted(x for s in starts if s in buckets for x in buckets[s].latencies_ms)
            last_minute = sum(counts[-6:])
            rows.append(
                {
                    "plugin": plugin,
                    "per_s_last_minute": round(last_minute / 60, 2),
                    "results_window": sum(counts),
                    "counts": counts,
                    "latency_p50_ms": _percentile(samples, 0.5),
                    "latency_p95_ms": _percentile(samples, 0.95),
                    "samples": len(samples),
                }
            )
        return rows


def _percentile(ordered: list[int], q: float) -> int | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
