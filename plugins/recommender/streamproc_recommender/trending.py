"""Trending items of one catalog: exponentially decayed popularity from the event stream.

Each playback event this worker sees adds its positive action weight to its item, and
every contribution halves each ``half_life_ms`` of event time. Trending is per worker
process (each worker sees only its own partitions) and is lost on restart; it is a
cold-start signal, not a global count. Before any event has been seen the ranking is the
training popularity, which also stays as a small prior (at most ``PRIOR_WEIGHT``, about a
single ``complete`` seven half-lives old) to order items the stream has not reached.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Sequence

import numpy as np

PRIOR_WEIGHT = 0.01
REBASE_HALF_LIVES = 32.0


class Trending:
    """Thread-safe decayed popularity over catalog-local item indices ``0..n-1``.

    ``observe`` counts an event id once (the last ``remember_ids`` ids are kept), so a
    replayed event does not count twice.
    """

    def __init__(self, prior: Sequence[float], half_life_ms: float, remember_ids: int = 100_000) -> None:
        prior_array = np.asarray(prior, dtype=np.float64)
        self.prior = PRIOR_WEIGHT * prior_array / max(float(prior_array.max(initial=0.0)), 1.0)
        self.half_life_ms = half_life_ms
        self.scores = np.zeros(len(prior_array))
        self.reference_ts: int | None = None
        self.latest_ts: int | None = None
        self.seen: set[str] = set()
        self.seen_order: deque[str] = deque()
        self.remember_ids = remember_ids
        self.lock = threading.Lock()

    def observe(self, event_id: str, item: int, weight: float, ts: int) -> None:
        """Add ``weight`` (ignored unless positive) to ``item`` at event time ``ts`` (ms)."""
        if weight <= 0:
            return
        with self.lock:
            if event_id in self.seen:
                return
            self.seen.add(event_id)
            self.seen_order.append(event_id)
            if len(self.seen_order) > self.remember_ids:
                self.seen.discard(self.seen_order.popleft())
            if self.reference_ts is None:
                self.reference_ts = ts
            self.latest_ts = ts if self.latest_ts is None else max(self.latest_ts, ts)
            # Scores are kept scaled to reference_ts; rebase before the scale overflows.
            exponent = (ts - self.reference_ts) / self.half_life_ms
            if exponent > REBASE_HALF_LIVES:
                self.scores *= 2.0**-exponent
                self.reference_ts, exponent = ts, 0.0
            self.scores[item] += weight * 2.0**exponent

    def top(self, k: int, exclude: Collection[int] = ()) -> list[tuple[int, float]]:
        """The ``k`` highest ``(item, score)`` now (at the latest event time seen), skipping
        ``exclude``; ties go to the lower index. Scores are decayed weights plus the prior."""
        with self.lock:
            decay = 0.0
            if self.reference_ts is not None and self.latest_ts is not None:
                decay = 2.0 ** ((self.reference_ts - self.latest_ts) / self.half_life_ms)
            values = self.scores * decay + self.prior
        order = np.argsort(-values, kind="stable")
        blocked = set(exclude)
        picked = [int(i) for i in order[: k + len(blocked)] if int(i) not in blocked][:k]
        return [(i, float(values[i])) for i in picked]
