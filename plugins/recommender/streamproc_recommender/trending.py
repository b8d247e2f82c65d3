"""Trending items of one catalog: exponentially decayed engagement from the live stream.

Items are the platform's own ids (namespaced), whether or not the catalogue maps them to
model items. Each playback event adds its trending weight (``TRENDING_WEIGHTS``: like 2,
complete 1, start 0.25; progress and skip add nothing) to its item, and every
contribution halves each ``half_life_ms``.

The decay clock is the plugin's own: a monotonic wall clock (``MonotonicClock``: the
wall-clock time at start plus the monotonic time elapsed since, so a wall-clock step does
not move it). An event counts at its event time clamped to at most *now*: a backlog
replayed after a restart decays by its real age, and an event from a device whose clock
runs ahead (even years) counts as *now* instead of freezing every later contribution.

Seed: at start, the training popularity of the catalogue's items, scaled so the most
popular item weighs ``SEED_WEIGHT`` (about one ``complete`` seven half-lives old), decays
like any event: it orders cold starts before the stream has shown anything and breaks
ties among items the stream has not reached. At most ``capacity`` items are tracked; a new
item past it replaces the item with the lowest score.

Per worker process: each worker sees only its own partitions' events, and the counts
start again from the seed on restart. Not thread-safe: the plugin calls it only from
``prepare`` (the plugin thread), never from ``update_state`` (the event loop).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping

import numpy as np

from streamproc_recommender.watched import HASH_DTYPE, item_hash

SEED_WEIGHT = 0.01
REBASE_HALF_LIVES = 32.0
TRENDING_WEIGHTS: Mapping[str, float] = {"like": 2.0, "complete": 1.0, "start": 0.25, "progress": 0.0, "skip": 0.0}


class MonotonicClock:
    """Milliseconds since the epoch that never go backwards: wall time at creation plus
    monotonic time since."""

    def __init__(self) -> None:
        self.wall_ms = time.time() * 1000.0
        self.start = time.monotonic()

    def __call__(self) -> float:
        return self.wall_ms + (time.monotonic() - self.start) * 1000.0


class Trending:
    """Decayed engagement per item id of one catalog (see the module doc).

    ``observe`` counts an event id once (the last ``remember_ids`` ids are kept), so a
    replayed event does not count twice.
    """

    def __init__(
        self,
        seed: Mapping[str, float],
        half_life_ms: float,
        clock: Callable[[], float] | None = None,
        capacity: int = 100_000,
        remember_ids: int = 100_000,
    ) -> None:
        self.half_life_ms = half_life_ms
        self.clock = clock or MonotonicClock()
        self.capacity = capacity
        self.reference_ms = self.clock()
        top = max(seed.values(), default=0.0)
        self.items: list[str] = list(seed)[:capacity]
        self.slot = {item: i for i, item in enumerate(self.items)}
        self.scores = np.asarray([SEED_WEIGHT * seed[item] / max(top, 1.0) for item in self.items], dtype=np.float64)
        self.hashes = np.asarray([item_hash(item) for item in self.items], dtype=HASH_DTYPE)
        self.seen: set[str] = set()
        self.seen_order: deque[str] = deque()
        self.remember_ids = remember_ids

    def observe(self, event_id: str, item: str, action: str, ts: int) -> None:
        """Add ``action``'s trending weight to ``item`` at event time ``ts`` (ms), clamped
        to at most now."""
        weight = TRENDING_WEIGHTS[action]
        if weight <= 0 or event_id in self.seen:
            return
        self.seen.add(event_id)
        self.seen_order.append(event_id)
        if len(self.seen_order) > self.remember_ids:
            self.seen.discard(self.seen_order.popleft())
        now = self._rebased_now()
        slot = self.slot.get(item)
        if slot is None:
            slot = self._new_slot(item)
        self.scores[slot] += weight * 2.0 ** ((min(float(ts), now) - self.reference_ms) / self.half_life_ms)

    def top(self, k: int, exclude: np.ndarray) -> list[tuple[str, float]]:
        """The ``k`` highest ``(item, score)`` now, skipping items whose ``item_hash`` is in
        ``exclude``; ties go to the item tracked first. Scores are decayed weights."""
        decay = 2.0 ** ((self.reference_ms - self._rebased_now()) / self.half_life_ms)
        n = len(self.items)
        values = self.scores[:n] * decay
        values[np.isin(self.hashes[:n], exclude)] = -np.inf
        order = np.argsort(-values, kind="stable")[:k]
        return [(self.items[i], float(values[i])) for i in order if np.isfinite(values[i])]

    def _rebased_now(self) -> float:
        """The clock now; scores are kept scaled to ``reference_ms``, rebased to now before
        the scale could overflow."""
        now = self.clock()
        elapsed = (now - self.reference_ms) / self.half_life_ms
        if elapsed > REBASE_HALF_LIVES:
            self.scores[: len(self.items)] *= 2.0**-elapsed
            self.reference_ms = now
        return now

    def _new_slot(self, item: str) -> int:
        n = len(self.items)
        if n < self.capacity:
            if n == len(self.scores):  # grow by doubling: amortised O(1) per new item
                grown = min(self.capacity, max(2 * n, 1024))
                self.scores = np.concatenate([self.scores, np.zeros(grown - n)])
                self.hashes = np.concatenate([self.hashes, np.zeros(grown - n, dtype=HASH_DTYPE)])
            self.items.append(item)
            slot = n
        else:
            slot = int(np.argmin(self.scores))
            del self.slot[self.items[slot]]
            self.items[slot] = item
        self.scores[slot] = 0.0
        self.hashes[slot] = item_hash(item)
        self.slot[item] = slot
        return slot
