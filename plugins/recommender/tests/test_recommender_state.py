"""The history state and the trending counter on their own (no model needed)."""

from __future__ import annotations

import pytest
from streamproc_recommender.history import append_event, namespaced_item, view_as_of
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


def history(*events: PlaybackEvent, size: int = 100) -> dict:
    state = None
    for e in events:
        state = append_event(state, e, size)
    return state


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
    assert view.watched == {"video:1", "video:2", "video:3", "video:4"}


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
    assert view_as_of(state, 2).positives == ("video:1", "video:2")


def test_out_of_order_arrivals_are_read_in_event_time_order() -> None:
    state = history(event("video:2", "complete", 20, "b"), event("video:1", "complete", 10, "a"))
    assert view_as_of(state, 30).positives == ("video:1", "video:2")


def test_a_replayed_event_id_returns_the_same_state() -> None:
    state = history(event("video:1", "complete", 1, "a"))
    assert append_event(state, event("video:1", "complete", 1, "a"), 100) is state


def test_namespaces_bare_ids_and_refuses_the_other_catalog() -> None:
    assert namespaced_item(event("42", "start", 1, "a", media="music")) == "music:42"
    with pytest.raises(InvalidInput, match="item_id"):
        namespaced_item(event("video:42", "start", 1, "a", media="music"))


def test_trending_counts_an_event_id_once() -> None:
    trending = Trending([0.0, 0.0, 0.0], half_life_ms=1000.0)
    trending.observe("e1", 2, 1.0, 0)
    trending.observe("e1", 2, 1.0, 0)
    trending.observe("e2", 1, 1.5, 0)
    assert trending.top(2) == [(1, 1.5), (2, 1.0)]


def test_trending_halves_each_half_life_and_ignores_negative_weights() -> None:
    trending = Trending([0.0, 0.0], half_life_ms=1000.0)
    trending.observe("e1", 0, 1.0, 0)
    trending.observe("e2", 1, 1.0, 1000)
    trending.observe("e3", 1, -1.0, 1000)
    assert trending.top(2) == [(1, pytest.approx(1.0)), (0, pytest.approx(0.5))]


def test_trending_stays_finite_over_thousands_of_half_lives() -> None:
    trending = Trending([5.0, 1.0], half_life_ms=1.0)
    for n in range(5000):
        trending.observe(f"e{n}", n % 2, 1.0, n)
    top = trending.top(2)
    assert all(0 < score < 3 for _, score in top)
    assert top[0][0] == 1  # the most recent play


def test_trending_falls_back_to_training_popularity_and_skips_excluded() -> None:
    trending = Trending([1.0, 9.0, 5.0], half_life_ms=1000.0)
    assert [i for i, _ in trending.top(3)] == [1, 2, 0]
    assert [i for i, _ in trending.top(2, exclude={1})] == [2, 0]
