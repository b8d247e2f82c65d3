"""Real event volumes through the public path (load_plugin -> state_key/update_state ->
prepare -> infer -> result): heavy users, progress heartbeats, operator catalogues."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamproc_recommender.stream_eval import held_out_users, replay, watch_events

from streamproc.errors import ConfigError
from streamproc.plugin import Plugin
from streamproc.registry import load_plugin

NOW = int(time.time() * 1000)


@pytest.fixture(scope="module")
def plugin() -> Plugin:
    return load_plugin("recommender")


def test_a_user_with_1000_items_each_with_start_10_progress_complete_never_gets_a_watched_item(
    plugin: Plugin,
) -> None:
    rng = np.random.default_rng(7)
    items = [str(i) for i in rng.permutation(np.arange(1, 1683))[:1000]]
    stats = replay(plugin, [("heavy", items, "video:0")], "video", progress=10)
    assert stats.events == 12_000
    assert stats.results == 2000  # every start and complete got a result
    assert stats.results_with_watched == 0
    state = None
    for event in watch_events("heavy", items, "video", progress=10):
        state = plugin.update_state(state, event)
    size = len(json.dumps(state, separators=(",", ":")))
    assert len(state["entries"]) == 200
    assert size < 20_000, size  # documented: about 10 kB of window + 5.33 bytes per watched item


def test_progress_heartbeats_do_not_change_held_out_recommendations(plugin: Plugin) -> None:
    users = held_out_users("video", 40)
    plain = replay(load_plugin("recommender"), users, "video", progress=None)
    heartbeats = replay(load_plugin("recommender"), users, "video", progress=10)
    assert heartbeats.ranks == plain.ranks
    assert plain.results_with_watched == heartbeats.results_with_watched == 0
    assert sum(r < 10 for r in plain.ranks) >= 2  # the protocol finds hits at all


def recommend_after(plugin: Plugin, user: str, items: list[str]) -> dict[str, Any]:
    state, result = None, None
    for event in watch_events(user, items, "video", progress=None, start_ts=NOW):
        state = plugin.update_state(state, event)
        (output,) = plugin.infer([plugin.prepare(event, state)])
        result = plugin.result(event, output)
    assert result is not None
    return dict(result)


def test_a_catalogue_file_maps_platform_ids_both_ways(tmp_path: Path) -> None:
    csv = tmp_path / "catalogue.csv"
    rows = [f"video:tt{n},video:{n}" for n in range(1, 1683)]
    csv.write_text("item_id,model_item\n" + "\n".join(rows) + "\n", encoding="utf-8")
    mapped = load_plugin("recommender", {"catalogue": str(csv)})
    movielens = load_plugin("recommender")
    ours = recommend_after(mapped, "u1", ["tt50", "tt172", "tt181"])
    theirs = recommend_after(movielens, "u1", ["50", "172", "181"])
    assert ours["source"] == "model" and ours["unknown_items"] == 0
    assert [e["item_id"] for e in ours["items"]] == [e["item_id"].replace(":", ":tt") for e in theirs["items"]]


def test_without_a_catalogue_cold_start_is_the_live_streams_own_items() -> None:
    plugin = load_plugin("recommender", {"catalogue": "none"})
    assert recommend_after(plugin, "first", ["a1"])["items"] == []  # nothing seen but their own item
    for n in range(5):
        recommend_after(plugin, f"viewer-{n}", ["b2"])
    result = recommend_after(plugin, "new", ["c3"])
    assert result["source"] == "trending" and result["unknown_items"] == 1
    ids = [e["item_id"] for e in result["items"]]
    assert ids[0] == "video:b2" and "video:c3" not in ids
    assert all(not i.removeprefix("video:").isdigit() for i in ids)  # no MovieLens ids invented


@pytest.mark.parametrize(
    ("content", "name"),
    [
        ('{"video:a": "video:999999"}', "c.json"),
        ('{"video:a": "music:rock-01-a01"}', "c.json"),
        ('{"video:a": "video:1", "video:b": "video:1"}', "c.json"),
        ('{"a": "video:1"}', "c.json"),
        ("platform,model\nvideo:a,video:1\n", "c.csv"),
        ("video:a video:1", "c.txt"),
    ],
)
def test_a_bad_catalogue_raises_config_error(tmp_path: Path, content: str, name: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"plugins\.recommender\.options\.catalogue"):
        load_plugin("recommender", {"catalogue": str(path)})
