"""The bundled recommender against the real stack: history-driven, stateful across restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from harness import WorkerProcess, create_topics, make_settings, produce, read_topic, wait_for

pytestmark = pytest.mark.integration

MOVIES = ["1", "50", "100", "172", "181", "258", "286", "288", "294", "300"]
SONGS = ["rock-01-a01", "rock-01-a02", "rock-01-a03", "jazz-01-a02"]


def play(event_id: str, user: str, item: str, ts: int, media: str = "video", action: str = "complete"):
    doc = {
        "id": event_id,
        "type": "playback",
        "ts": ts,
        "user_id": user,
        "item_id": item,
        "action": action,
        "position_s": 0.0,
        "duration_s": 100.0,
        "media": media,
    }
    return user.encode(), json.dumps(doc).encode()


def _recs(records: list[dict], user: str) -> list[list[str]]:
    mine = sorted((r for r in records if r["key"] == user), key=lambda r: r["event_ts"])
    return [[item["item_id"] for item in r["body"]["items"]] for r in mine]


def test_recommendations_follow_history_exclude_watched_and_survive_a_restart(
    endpoints, unique, tmp_path: Path
) -> None:
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["recommender"])
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    topic, out = f"{unique}-playback", f"{unique}-out-recommendations"
    t0 = int(time.time() * 1000)
    steady = [play(f"a{i}", "steady", item, t0 + i) for i, item in enumerate(MOVIES)]
    restarted = [play(f"b{i}", "restarted", item, t0 + i) for i, item in enumerate(MOVIES)]
    music = [play(f"m{i}", "listener", song, t0 + i, media="music") for i, song in enumerate(SONGS)]

    worker = WorkerProcess(settings, tmp_path).start()
    produce(endpoints.kafka_bootstrap, topic, steady + restarted[:5] + music)
    read_topic(endpoints.kafka_bootstrap, out, len(steady) + 5 + len(music))
    code, _ = worker.terminate()
    assert code == 0
    worker = WorkerProcess(settings, tmp_path).start()  # a fresh process: history must come from Redis
    try:
        produce(endpoints.kafka_bootstrap, topic, restarted[5:])
        records = read_topic(endpoints.kafka_bootstrap, out, len(steady) + len(restarted) + len(music))
        wait_for(lambda: worker.metric("streamproc_in_flight_events") == 0, 30, "the worker to settle")
    finally:
        worker.terminate()

    steady_recs, restarted_recs = _recs(records, "steady"), _recs(records, "restarted")
    assert len(steady_recs) == len(MOVIES) == len(restarted_recs)
    for i, recs in enumerate(steady_recs):
        watched = {f"video:{m}" for m in MOVIES[: i + 1]}
        assert len(recs) == 10 and not watched & set(recs), f"event {i}: watched items recommended"
    assert steady_recs[0] != steady_recs[-1], "recommendations did not change with history"
    assert restarted_recs[5:] == steady_recs[5:], "a restart changed the recommendations: history was lost"
    music_recs = _recs(records, "listener")
    assert all(item.startswith("music:") for recs in music_recs for item in recs)
    assert not {f"music:{s}" for s in SONGS} & set(music_recs[-1])
