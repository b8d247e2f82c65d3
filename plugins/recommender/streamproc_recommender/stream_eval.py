"""The held-out protocol replayed as playback events through the plugin's public path.

Each held-out user's history (``data.Catalog.holdout``, the same users, items and
targets as ``evaluate``) becomes a stream of playback events on one key, one second
apart, and every event goes through the plugin as the engine drives it:
``registry.load_plugin("recommender")`` -> ``state_key`` -> ``update_state`` ->
``prepare`` -> ``infer`` (batches of up to 64) -> ``result``. Protocols:

- ``plain``: one ``complete`` event per item;
- ``progress``: per item ``start``, ``progress`` x N (default 10), ``complete``.

Measured per protocol: HR@10 and NDCG@10 of the result of each user's last event (the
``complete`` of their last history item) against their held-out target; and the
exclusion promise, checked on *every* result of *every* event: how many results, and how
many users, got back an item the user had an event for before. 95% intervals: percentile
bootstrap over users (2,000 resamples, seed 0) for the metrics and the paired
``progress - plain`` difference, Wilson for proportions.

``python -m streamproc_recommender.stream_eval [--media video] [--users N] [--progress 10]``
prints JSON and logs progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from streamproc.events import PlaybackEvent
from streamproc.plugin import Plugin
from streamproc.registry import load_plugin
from streamproc_recommender.data import load_catalogs

K = 10
BATCH = 64
T0 = 1_700_000_000_000
BOOTSTRAP = 2000


def playback(user: str, item: str, action: str, ts: int, event_id: str, media: str) -> PlaybackEvent:
    """A valid playback event."""
    return PlaybackEvent.model_validate(
        {
            "id": event_id,
            "type": "playback",
            "ts": ts,
            "user_id": user,
            "item_id": item,
            "action": action,
            "position_s": 0.0,
            "duration_s": 600.0,
            "media": media,
        }
    )


def watch_events(
    user: str, items: Sequence[str], media: str, progress: int | None, start_ts: int = T0
) -> Iterator[PlaybackEvent]:
    """The playback events of watching ``items`` in order: one ``complete`` each
    (``progress`` None), or ``start``, ``progress`` x ``progress``, ``complete``."""
    actions = ["complete"] if progress is None else ["start", *["progress"] * progress, "complete"]
    n = 0
    for item in items:
        for action in actions:
            yield playback(user, item, action, start_ts + 1000 * n, f"{user}-{n}", media)
            n += 1


@dataclass
class ReplayStats:
    """What one protocol's replay measured."""

    ranks: list[int] = field(default_factory=list)
    results: int = 0
    results_with_watched: int = 0
    users_with_watched: set[str] = field(default_factory=set)
    events: int = 0


def replay(
    plugin: Plugin, users: Sequence[tuple[str, Sequence[str], str]], media: str, progress: int | None
) -> ReplayStats:
    """Replay each ``(user, history, target)`` through ``plugin``; ``ranks`` holds the
    target's 0-based position in each user's last result (``K`` when absent)."""
    stats = ReplayStats()
    pending: list[tuple[PlaybackEvent, Any, frozenset[str], str | None]] = []

    def flush() -> None:
        outputs = plugin.infer([prepared for _, prepared, _, _ in pending])
        for (event, _, seen, target), output in zip(pending, outputs, strict=True):
            items = [entry["item_id"] for entry in plugin.result(event, output)["items"]]
            stats.results += 1
            if seen & set(items):
                stats.results_with_watched += 1
                stats.users_with_watched.add(event.user_id)
            if target is not None:
                stats.ranks.append(items.index(target) if target in items else K)
        pending.clear()

    for done, (user, history, target) in enumerate(users):
        state: Mapping[str, Any] | None = None
        seen: set[str] = set()
        events = list(watch_events(user, history, media, progress))
        for n, event in enumerate(events):
            if plugin.state_key(event) != f"{media}:{user}":
                raise RuntimeError(f"state key {plugin.state_key(event)!r} is not the user's")
            state = plugin.update_state(state, event)
            seen.add(f"{media}:{event.item_id}")
            prepared = plugin.prepare(event, state)
            stats.events += 1
            if prepared is not None:
                pending.append((event, prepared, frozenset(seen), target if n == len(events) - 1 else None))
            if len(pending) >= BATCH:
                flush()
        if done % 100 == 99:
            print(f"  {progress=}: {done + 1}/{len(users)} users, {stats.events} events", file=sys.stderr)
    if pending:
        flush()
    return stats


def bootstrap_ci(values: np.ndarray, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean (``BOOTSTRAP`` resamples)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAP, len(values)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def hits_and_gains(ranks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user hit@K (0/1) and NDCG@K (one relevant item)."""
    r = np.asarray(ranks, dtype=np.float64)
    return (r < K).astype(np.float64), np.where(r < K, 1.0 / np.log2(r + 2.0), 0.0)


def summary(stats: ReplayStats) -> dict[str, Any]:
    """Metrics with intervals, and the exclusion check, of one replay."""
    hits, gains = hits_and_gains(stats.ranks)
    n_users = len(stats.ranks)
    return {
        "users": n_users,
        "events": stats.events,
        "hr@10": float(hits.mean()),
        "hr@10_ci95": bootstrap_ci(hits),
        "ndcg@10": float(gains.mean()),
        "ndcg@10_ci95": bootstrap_ci(gains),
        "results_checked": stats.results,
        "results_with_a_watched_item": stats.results_with_watched,
        "results_with_a_watched_item_ci95": wilson(stats.results_with_watched, stats.results),
        "users_shown_a_watched_item": len(stats.users_with_watched),
        "users_shown_a_watched_item_ci95": wilson(len(stats.users_with_watched), n_users),
    }


def paired_difference(a: ReplayStats, b: ReplayStats) -> dict[str, Any]:
    """``b - a`` per user (the same users in the same order), with bootstrap intervals."""
    hits_a, gains_a = hits_and_gains(a.ranks)
    hits_b, gains_b = hits_and_gains(b.ranks)
    return {
        "hr@10": float((hits_b - hits_a).mean()),
        "hr@10_ci95": bootstrap_ci(hits_b - hits_a),
        "ndcg@10": float((gains_b - gains_a).mean()),
        "ndcg@10_ci95": bootstrap_ci(gains_b - gains_a),
        "users_with_a_different_rank": int(sum(x != y for x, y in zip(a.ranks, b.ranks, strict=True))),
    }


def held_out_users(media: str, limit: int | None) -> list[tuple[str, tuple[str, ...], str]]:
    """``(user, history, target)`` of the test split, history items as bare ids."""
    catalog = load_catalogs()[media]
    prefix = f"{media}:"
    users = [
        (f"{media}-user-{user}", tuple(i.removeprefix(prefix) for i in history), target)
        for user, (history, target) in zip(catalog.sequences, catalog.holdout("test"), strict=True)
    ]
    return users[:limit] if limit else users


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", choices=("video", "music"), default="video")
    parser.add_argument("--users", type=int, default=None, help="first N held-out users (default: all)")
    parser.add_argument("--progress", type=int, default=10, help="progress events per item in the progress protocol")
    parser.add_argument("--catalogue", default="movielens", help="the plugin's catalogue option")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    users = held_out_users(args.media, args.users)
    report: dict[str, Any] = {"media": args.media, "protocols": {}}
    runs = {}
    for name, progress in (("plain", None), ("progress", args.progress)):
        plugin = load_plugin("recommender", {"catalogue": args.catalogue})  # fresh trending per protocol
        started = time.perf_counter()
        print(f"{name}: replaying {len(users)} users", file=sys.stderr)
        runs[name] = replay(plugin, users, args.media, progress)
        report["protocols"][name] = {**summary(runs[name]), "wall_s": round(time.perf_counter() - started, 1)}
        report["model_version"] = plugin.model_version
    report["progress_minus_plain"] = paired_difference(runs["plain"], runs["progress"])
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
