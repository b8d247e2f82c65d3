"""The recommender as the engine sees it: discovery, load, state, prepare -> infer -> result."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

import pytest

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import PlaybackEvent, UploadEvent
from streamproc.plugin import ENTRY_POINT_GROUP, Plugin
from streamproc.registry import load_plugin
from streamproc.testing import PluginHarness, check_contract

_ids = itertools.count()
# Event times near the real now: trending decays on the plugin's own clock, and clamps
# event times to it.
T0 = int(time.time() * 1000) - 3_600_000
LATER = T0 + 1_800_000


def discover() -> type[Plugin]:
    """The recommender class, found through the entry point like any third-party plugin."""
    (entry,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "recommender"]
    return entry.load()


@pytest.fixture
def make_plugin() -> Callable[..., Plugin]:
    """A factory of freshly loaded plugins (each with its own trending), on CPU."""

    def make(**options: Any) -> Plugin:
        return load_plugin("recommender", options)

    return make


@pytest.fixture
def plugin(make_plugin: Callable[..., Plugin]) -> Plugin:
    return make_plugin()


def play(
    user: str,
    item: str,
    action: str = "complete",
    ts: int = T0,
    media: str = "video",
    event_id: str | None = None,
) -> PlaybackEvent:
    """A valid playback event (a fresh id unless one is given)."""
    return PlaybackEvent.model_validate(
        {
            "id": event_id or f"ev-{next(_ids)}",
            "type": "playback",
            "ts": ts,
            "user_id": user,
            "item_id": item,
            "action": action,
            "position_s": 0.0,
            "duration_s": 120.0,
            "media": media,
        }
    )


def watch(user: str, items: Iterable[str], media: str = "video", start_ts: int = T0) -> list[PlaybackEvent]:
    """One ``complete`` event per item, a minute apart."""
    return [play(user, item, "complete", start_ts + 60_000 * i, media) for i, item in enumerate(items)]


def feed(
    plugin: Plugin, events: Iterable[PlaybackEvent], state: Mapping[str, Any] | None = None
) -> tuple[Mapping[str, Any] | None, Any]:
    """Apply events as the engine does (update_state, then prepare); return the state and
    the last prepared input."""
    prepared = None
    for event in events:
        state = plugin.update_state(state, event)
        prepared = plugin.prepare(event, state)
    return state, prepared


def recommend(plugin: Plugin, event: PlaybackEvent, state: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The result body for one event, after its state update."""
    state = plugin.update_state(state, event)
    prepared = plugin.prepare(event, state)
    assert prepared is not None
    (output,) = plugin.infer([prepared])
    return plugin.result(event, output)


def item_ids(result: Mapping[str, Any]) -> list[str]:
    return [entry["item_id"] for entry in result["items"]]


STAR_WARS_FAN = ["video:50", "video:172", "video:181", "video:174", "video:96"]
DISNEY_FAN = ["video:1", "video:95", "video:71", "video:404", "video:588"]
JAZZ_FAN = ["music:jazz-01-a01", "music:jazz-01-a02", "music:jazz-01-a03", "music:jazz-02-a01"]


def test_entry_point_finds_the_recommender_plugin() -> None:
    cls = discover()
    assert issubclass(cls, Plugin)
    assert (cls.name, cls.consumes, cls.produces) == ("recommender", ("playback",), "recommendations")


def test_load_versions_the_model_by_its_weights_hash(plugin: Plugin) -> None:
    assert plugin.model_version.startswith("recommender-")
    assert len(plugin.model_version) == len("recommender-") + 12


def test_result_lists_top_k_items_with_scores_version_and_media(plugin: Plugin) -> None:
    state, _ = feed(plugin, watch("u1", STAR_WARS_FAN[:-1]))
    result = recommend(plugin, watch("u1", STAR_WARS_FAN[-1:], start_ts=LATER)[0], state)
    assert json.loads(json.dumps(result)) == result
    assert result["media"] == "video"
    assert result["source"] == "model"
    assert result["model_version"] == plugin.model_version
    assert len(result["items"]) == 10
    scores = [entry["score"] for entry in result["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s <= 1.0 for s in scores)


def test_top_k_option_sets_the_number_of_items(make_plugin: Callable[..., Plugin]) -> None:
    plugin = make_plugin(top_k=3)
    state, _ = feed(plugin, watch("u1", STAR_WARS_FAN[:-1]))
    assert len(recommend(plugin, play("u1", STAR_WARS_FAN[-1]), state)["items"]) == 3


def test_a_users_history_changes_the_recommendations(plugin: Plugin) -> None:
    fan_state, _ = feed(plugin, watch("fan", STAR_WARS_FAN[:-1]))
    kid_state, _ = feed(plugin, watch("kid", DISNEY_FAN[:-1]))
    fan = item_ids(recommend(plugin, play("fan", STAR_WARS_FAN[-1]), fan_state))
    kid = item_ids(recommend(plugin, play("kid", DISNEY_FAN[-1]), kid_state))
    assert len(set(fan) & set(kid)) <= 3
    # One more item in the same history moves the ranking too.
    longer, _ = feed(plugin, watch("fan", STAR_WARS_FAN))
    assert item_ids(recommend(plugin, play("fan", "video:127", ts=LATER), longer)) != fan


def test_watched_items_are_never_recommended(plugin: Plugin) -> None:
    state: Mapping[str, Any] | None = None
    watched: set[str] = set()
    event = play("binge", "video:50")
    for step in range(25):
        result = recommend(plugin, event, state)
        state = plugin.update_state(state, event)
        watched.add(event.item_id)
        assert not watched & set(item_ids(result))
        event = play("binge", item_ids(result)[0], ts=T0 + 60_000 * (step + 1))


def test_music_events_get_music_items_only_and_video_events_video_items(plugin: Plugin) -> None:
    music_state, _ = feed(plugin, watch("u1", JAZZ_FAN[:-1], media="music"))
    music = recommend(plugin, play("u1", JAZZ_FAN[-1], media="music"), music_state)
    assert music["media"] == "music"
    assert music["items"] and all(i.startswith("music:") for i in item_ids(music))
    video_state, _ = feed(plugin, watch("u1", STAR_WARS_FAN[:-1]))
    video = recommend(plugin, play("u1", STAR_WARS_FAN[-1]), video_state)
    assert all(i.startswith("video:") for i in item_ids(video))


def test_synthetic_album_order_is_learned(plugin: Plugin) -> None:
    state, _ = feed(plugin, watch("u1", JAZZ_FAN[:3], media="music"))
    result = recommend(plugin, play("u1", JAZZ_FAN[2], media="music", ts=LATER), state)
    assert "music:jazz-01-a04" in item_ids(result)[:3]


def test_state_key_is_media_and_user(plugin: Plugin) -> None:
    assert plugin.state_key(play("u7", "video:1")) == "video:u7"
    assert plugin.state_key(play("u7", "music:jazz-01-a01", media="music")) == "music:u7"


def test_bare_item_ids_take_the_events_media_namespace(plugin: Plugin) -> None:
    namespaced, _ = feed(plugin, watch("u1", STAR_WARS_FAN))
    bare, _ = feed(plugin, watch("u1", [i.removeprefix("video:") for i in STAR_WARS_FAN]))
    event = play("u1", "video:1", ts=LATER)
    assert item_ids(recommend(plugin, event, namespaced)) == item_ids(recommend(plugin, event, bare))


def test_cold_start_gets_training_popularity_before_any_event(plugin: Plugin) -> None:
    result = recommend(plugin, play("new", "video:unknown-item"), None)
    assert result["source"] == "trending"
    vocab = plugin.vocab
    start, stop = vocab.ranges["video"]
    popular = sorted(range(start, stop), key=lambda i: -vocab.popularity[i])[:10]
    assert item_ids(result) == [vocab.items[i] for i in popular]


def test_cold_start_user_gets_trending_items_that_follow_the_stream(plugin: Plugin) -> None:
    niche = "video:1500"
    before = item_ids(recommend(plugin, play("cold-1", "video:unknown"), None))
    assert niche not in before
    for n in range(40):
        feed(plugin, [play(f"viewer-{n}", niche, "complete", ts=T0 + n * 1000)])
    after = recommend(plugin, play("cold-2", "video:unknown", ts=T0 + 100_000), None)
    assert after["source"] == "trending"
    assert item_ids(after)[0] == niche
    # Trending is per catalog: music cold starts are untouched by video plays.
    music = recommend(plugin, play("cold-3", "music:unknown", media="music"), None)
    assert all(i.startswith("music:") for i in item_ids(music))


def test_trending_decays_with_event_time(make_plugin: Callable[..., Plugin]) -> None:
    plugin = make_plugin(trending_half_life_s=60)
    t0 = int(time.time() * 1000) - 600_000  # ten half-lives ago
    for n in range(20):
        feed(plugin, [play(f"a{n}", "video:1500", ts=t0 + n)])
    for n in range(5):
        feed(plugin, [play(f"b{n}", "video:1600", ts=t0 + 600_000 + n)])
    top = item_ids(recommend(plugin, play("cold", "video:unknown", ts=t0 + 600_010), None))
    assert top[:2] == ["video:1600", "video:1500"]


def test_cold_start_excludes_watched_and_skipped_items(plugin: Plugin) -> None:
    popular = item_ids(recommend(plugin, play("probe", "video:unknown"), None))
    skipped = [play("picky", popular[0], "start"), play("picky", popular[0], "skip", ts=T0 + 1_000)]
    _, prepared = feed(plugin, skipped)
    (output,) = plugin.infer([prepared])
    result = plugin.result(skipped[-1], output)
    assert result["source"] == "trending"
    assert popular[0] not in item_ids(result)


def test_skipped_items_are_not_fed_to_the_model(plugin: Plugin) -> None:
    state, base = feed(plugin, watch("u1", STAR_WARS_FAN))
    skip_events = [
        play("u1", "video:1", "start", ts=LATER),
        play("u1", "video:1", "skip", ts=LATER + 1_000),
    ]
    state, skipped = feed(plugin, skip_events, state)
    assert skipped.sequence == base.sequence
    assert plugin.vocab.index["video:1"] in skipped.exclude


def test_unknown_items_are_ignored_in_the_input(plugin: Plugin) -> None:
    _, known = feed(plugin, watch("u1", STAR_WARS_FAN))
    with_unknown = [*STAR_WARS_FAN[:2], "video:999999", *STAR_WARS_FAN[2:]]
    _, mixed = feed(plugin, watch("u2", with_unknown))
    assert mixed.sequence == known.sequence
    _, only_unknown = feed(plugin, watch("u3", ["video:999999", "video:abc"]))
    assert only_unknown.trending is not None


def test_history_is_read_as_of_the_event_time(plugin: Plugin) -> None:
    t0 = T0
    state, _ = feed(plugin, watch("u1", STAR_WARS_FAN, start_ts=t0))
    early = play("u1", "video:50", "like", ts=t0 + 90_000)  # after the 2nd item, before the 3rd
    prepared = plugin.prepare(early, plugin.update_state(state, early))
    vocab = plugin.vocab
    assert prepared.sequence == tuple(vocab.index[i] for i in ["video:172", "video:50"])


def test_progress_events_recommend_nothing_unless_configured(make_plugin: Callable[..., Plugin]) -> None:
    event = play("u1", "video:50", "progress")
    default = make_plugin()
    assert default.prepare(event, default.update_state(None, event)) is None
    eager = make_plugin(recompute_on_progress=True)
    assert eager.prepare(event, eager.update_state(None, event)) is not None


def test_replaying_an_event_id_through_update_state_changes_nothing(plugin: Plugin) -> None:
    state, _ = feed(plugin, watch("u1", STAR_WARS_FAN))
    replay = play("u1", "video:1", "like", event_id="dup-1")
    once = plugin.update_state(state, replay)
    twice = plugin.update_state(once, replay)
    assert twice == once
    # Same id, different payload: still a no-op.
    assert plugin.update_state(once, play("u1", "video:2", "skip", event_id="dup-1")) == once


def test_history_is_bounded(make_plugin: Callable[..., Plugin]) -> None:
    plugin = make_plugin(history_size=5)
    state, _ = feed(plugin, watch("u1", [f"video:{i}" for i in range(1, 20)]))
    assert [e[0] for e in state["entries"]] == [f"video:{i}" for i in range(15, 20)]


def test_batch_of_n_equals_one_by_one(plugin: Plugin) -> None:
    histories = [
        watch("a", STAR_WARS_FAN),
        watch("b", DISNEY_FAN),
        watch("c", JAZZ_FAN, media="music"),
        watch("d", ["video:unknown"]),  # cold start
        watch("e", STAR_WARS_FAN[:1]),
        watch("f", [f"video:{i}" for i in range(100, 170)]),  # longer than max_len
    ]
    events = [events[-1] for events in histories]
    prepared = [feed(plugin, events)[1] for events in histories]
    batched = plugin.infer(prepared)
    single = [plugin.infer([p])[0] for p in prepared]
    assert len(batched) == len(prepared)
    for event, b, s in zip(events, batched, single, strict=True):
        rb, rs = plugin.result(event, b), plugin.result(event, s)
        assert item_ids(rb) == item_ids(rs)
        for eb, es in zip(rb["items"], rs["items"], strict=True):
            assert eb["score"] == pytest.approx(es["score"], rel=1e-4, abs=1e-6)


def test_non_playback_events_raise_invalid_input(plugin: Plugin) -> None:
    upload = UploadEvent.model_validate(
        {"id": "up-1", "type": "upload", "ts": 1, "user_id": "u1", "upload_id": "x", "title": "t"}
    )
    assert plugin.state_key(upload) is None
    with pytest.raises(InvalidInput, match="type"):
        plugin.prepare(upload, None)


def test_an_item_of_the_other_catalog_raises_invalid_input(plugin: Plugin) -> None:
    event = play("u1", "video:50", media="music")
    state = plugin.update_state(None, event)
    assert state["entries"] == [] and state["recent_ids"] == []
    with pytest.raises(InvalidInput, match="item_id"):
        plugin.prepare(event, state)


def test_a_malformed_state_raises_invalid_input(plugin: Plugin) -> None:
    event = play("u1", "video:50")
    with pytest.raises(InvalidInput, match="state"):
        plugin.prepare(event, {"entries": [["video:1", "heavy", 1, "e"]]})
    with pytest.raises(InvalidInput, match="state"):
        plugin.prepare(event, {"entries": "nope"})
    # update_state replaces a malformed state instead of failing the key forever.
    assert plugin.update_state({"entries": "nope"}, event)["entries"][0][0] == "video:50"


@pytest.mark.parametrize(
    "options",
    [
        {"top_k": 0},
        {"top_k": "10"},
        {"recompute_on_progress": "yes"},
        {"trending_half_life_s": 0},
        {"history_size": 0},
        {"colour": 1},
        {"weights_dir": "/nonexistent/weights"},
    ],
)
def test_bad_options_raise_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"plugins\.recommender\.options"):
        load_plugin("recommender", options)


def test_recommender_meets_the_plugin_contract() -> None:
    events = [
        *watch("fan", STAR_WARS_FAN),
        play("fan", "video:50", "progress", LATER),
        *watch("jazz", JAZZ_FAN, media="music"),
        play("newcomer", "video:999999", "start", LATER),
    ]
    # trending scores decay on the plugin's own clock, so runs a moment apart differ slightly
    report = check_contract(lambda: PluginHarness.load("recommender"), events, rel_tol=1e-2)
    assert report.results == len(events) - 1 and report.skipped == 1  # progress: no recomputation
