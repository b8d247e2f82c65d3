"""The history state and the trending counter on their own (no model needed)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from streamproc_recommender import watched
from streamproc_recommender.history import apply_event, namespaced_item, read_history
from streamproc_recommender.trending import Trending

from streamproc.errors import InvalidInput
from streamproc.events import PlaybackEvent


def event(item: str, action: str, ts: int, event_id: str, media: str = "video") -> PlaybackEvent:
    return PlaybackEvent.model_validate(
        {
            "id": event_id,
            "type": "playback",
            "ts": ts,
            "user_id": "u1",
            "item_id": item,
            "action": action,
            "position_s": 1.0,
            "duration_s": 10.0,
            "media": media,
        }
    )


def history(*events: PlaybackEvent, size: int = 100, state: dict | None = None) -> dict:
    for e in events:
        state = apply_event(state, e, size, 10_000)
    return state


def view_as_of(state: dict, ts: int):
    return read_history(state).view_as_of(ts)


class FakeClock:
    """A settable clock in epoch milliseconds."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_likes_and_completes_are_positives_and_a_started_then_skipped_item_is_not() -> None:
    state = history(
        event("video:1", "start", 1, "a"),
        event("video:1", "skip", 2, "b"),
        event("video:2", "complete", 3, "c"),
        event("video:3", "like", 4, "d"),
        event("video:4", "complete", 5, "e"),
        event("video:4", "skip", 6, "f"),  # completed, then skipped on a replay: net zero
    )
    view = view_as_of(state, 10)
    assert view.positives == ("video:2", "video:3")
    assert set(view.items) == {"video:1", "video:2", "video:3", "video:4"}


def test_liked_then_skipped_item_stays_positive() -> None:
    state = history(event("video:5", "like", 1, "a"), event("video:5", "skip", 2, "b"))
    assert view_as_of(state, 10).positives == ("video:5",)


def test_positives_are_ordered_by_their_latest_interaction() -> None:
    state = history(
        event("video:1", "complete", 1, "a"),
        event("video:2", "complete", 2, "b"),
        event("video:1", "progress", 3, "c"),
    )
    assert view_as_of(state, 10).positives == ("video:2", "video:1")
    # Touched again after ts 2: left out of the view as of 2.
    assert view_as_of(state, 2).positives == ("video:2",)


def test_out_of_order_arrivals_are_read_in_event_time_order() -> None:
    state = history(event("video:2", "complete", 20, "b"), event("video:1", "complete", 10, "a"))
    assert view_as_of(state, 30).positives == ("video:1", "video:2")


def test_a_replayed_event_id_returns_the_same_state() -> None:
    state = history(event("video:1", "complete", 1, "a"))
    assert apply_event(state, event("video:1", "complete", 1, "a"), 100, 10_000) is state


def test_namespaces_bare_ids_and_refuses_the_other_catalog() -> None:
    assert namespaced_item(event("42", "start", 1, "a", media="music")) == "music:42"
    with pytest.raises(InvalidInput, match="item_id"):
        namespaced_item(event("video:42", "start", 1, "a", media="music"))


def test_progress_heartbeats_take_one_window_slot_and_cannot_outweigh_a_skip() -> None:
    events = [event("video:1", "start", 0, "s")]
    events += [event("video:1", "progress", 1 + n, f"p{n}") for n in range(50)]
    events += [event("video:1", "skip", 100, "k"), event("video:2", "complete", 101, "c")]
    state = history(*events, size=2)
    assert [e[0] for e in state["entries"]] == ["video:1", "video:2"]
    assert view_as_of(state, 200).positives == ("video:2",)


def test_evicted_items_stay_in_the_watched_set() -> None:
    state = history(*(event(f"video:{i}", "complete", i, f"e{i}") for i in range(1, 301)), size=20)
    assert len(state["entries"]) == 20
    hashes = watched.decode(state["watched"])
    assert len(hashes) == 300
    assert np.isin(watched.item_hashes([f"video:{i}" for i in range(1, 301)]), hashes).all()


def test_update_is_pure_deterministic_and_json() -> None:
    state = history(event("video:1", "complete", 1, "a"), event("video:2", "like", 2, "b"))
    before = copy.deepcopy(state)
    new = apply_event(state, event("video:3", "start", 3, "c"), 100, 10_000)
    assert state == before
    assert new == apply_event(copy.deepcopy(state), event("video:3", "start", 3, "c"), 100, 10_000)
    assert json.loads(json.dumps(new)) == json.loads(json.dumps(new, sort_keys=True))
    # The hash is BLAKE2b, not Python's per-process salted hash(): a fixed value.
    assert watched.item_hash("video:1") == 817997027


def test_a_state_of_the_previous_format_is_migrated_on_read() -> None:
    old = {
        "entries": [
            ["video:1", 0.25, 1, "a"],
            ["video:1", 0.1, 2, "b"],
            ["video:2", 1.0, 3, "c"],
            ["video:1", 1.0, 4, "d"],
            ["video:3", 0.25, 5, "e"],
            ["video:3", -1.0, 6, "f"],
        ]
    }
    migrated = read_history(json.loads(json.dumps(old)))
    assert [e[0] for e in migrated.entries] == ["video:2", "video:1", "video:3"]
    assert migrated.view_as_of(10).positives == ("video:2", "video:1")
    assert migrated.recent_ids == ("a", "b", "c", "d", "e", "f")
    assert np.isin(watched.item_hashes(["video:1", "video:2", "video:3"]), watched.decode(migrated.watched)).all()
    # update_state on an old document: a replayed id is a no-op, a new event writes version 2.
    assert apply_event(old, event("video:9", "like", 7, "d"), 100, 10_000) is old
    new = apply_event(old, event("video:9", "like", 7, "g"), 100, 10_000)
    assert new["v"] == 2 and [e[0] for e in new["entries"]] == ["video:2", "video:1", "video:3", "video:9"]


def test_trending_counts_an_event_id_once() -> None:
    clock = FakeClock(0.0)
    trending = Trending({"video:a": 0.0, "video:b": 0.0, "video:c": 0.0}, half_life_ms=1000.0, clock=clock)
    trending.observe("e1", "video:c", "complete", 0)
    trending.observe("e1", "video:c", "complete", 0)
    trending.observe("e2", "video:b", "like", 0)
    assert trending.top(2, NONE) == [("video:b", 2.0), ("video:c", 1.0)]


NONE = np.zeros(0, dtype=np.uint32)


def test_trending_halves_each_half_life_of_the_clock_and_ignores_skips_and_progress() -> None:
    clock = FakeClock(0.0)
    trending = Trending({}, half_life_ms=1000.0, clock=clock)
    trending.observe("e1", "video:a", "complete", 0)
    clock.now = 1000.0
    trending.observe("e2", "video:b", "complete", 1000)
    trending.observe("e3", "video:b", "skip", 1000)
    trending.observe("e4", "video:c", "progress", 1000)
    assert trending.top(3, NONE) == [("video:b", pytest.approx(1.0)), ("video:a", pytest.approx(0.5))]


def test_one_event_with_a_future_timestamp_does_not_freeze_trending() -> None:
    clock = FakeClock(1_000_000.0)
    trending = Trending({}, half_life_ms=1000.0, clock=clock)
    year = 365 * 86_400_000
    trending.observe("future", "video:a", "like", int(clock.now) + 10 * year)  # counts as now: weight 2
    for n in range(3):
        clock.now += 1000.0
        trending.observe(f"e{n}", "video:b", "complete", int(clock.now))
    top = trending.top(2, NONE)
    assert [item for item, _ in top] == ["video:b", "video:a"]
    assert top[1][1] == pytest.approx(2.0 * 2**-3)  # the future event decays like any other


def test_trending_stays_finite_over_thousands_of_half_lives() -> None:
    clock = FakeClock(0.0)
    trending = Trending({"video:a": 5.0, "video:b": 1.0}, half_life_ms=1.0, clock=clock)
    for n in range(5000):
        clock.now = float(n)
        trending.observe(f"e{n}", ["video:a", "video:b"][n % 2], "complete", n)
    top = trending.top(2, NONE)
    assert all(0 < score < 3 for _, score in top)
    assert top[0][0] == "video:b"  # the most recent play


def test_trending_is_seeded_by_training_popularity_and_skips_excluded() -> None:
    trending = Trending({"video:a": 1.0, "video:b": 9.0, "video:c": 5.0}, half_life_ms=1e9)
    assert [i for i, _ in trending.top(3, NONE)] == ["video:b", "video:c", "video:a"]
    assert [i for i, _ in trending.top(2, watched.item_hashes(["video:b"]))] == ["video:c", "video:a"]


def test_trending_tracks_at_most_capacity_items() -> None:
    clock = FakeClock(0.0)
    trending = Trending({}, half_life_ms=1000.0, clock=clock, capacity=3)
    for n in range(10):
        trending.observe(f"e{n}", f"video:{n}", "complete", 0)
    trending.observe("again", "video:9", "complete", 0)
    assert len(trending.items) == 3
    assert trending.top(1, NONE)[0][0] == "video:9"
