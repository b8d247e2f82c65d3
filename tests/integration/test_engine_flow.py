"""The engine end to end against the real Kafka broker and Redis server, with test plugins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from harness import (
    WorkerProcess,
    create_topics,
    feed,
    make_settings,
    playback,
    produce,
    read_topic,
    upload,
)

pytestmark = pytest.mark.integration


def test_every_valid_event_yields_its_results_in_redis_and_on_its_topic(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["echo", "shout"])
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
    try:
        plays = [playback(f"p{i}", f"user{i % 7}", str(i)) for i in range(60)]
        ups = [upload(f"u{i}", f"up{i}", title=f"title {i}") for i in range(30)]
        produce(endpoints.kafka_bootstrap, f"{unique}-playback", plays)
        produce(endpoints.kafka_bootstrap, f"{unique}-upload", ups)
        echoes = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-echo", 90)
        shouts = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-shout", 90)
    finally:
        worker.terminate()
    ids = {f"p{i}" for i in range(60)} | {f"u{i}" for i in range(30)}
    assert {r["event_id"] for r in echoes} == ids
    assert {r["event_id"] for r in shouts} == ids
    assert all(r["body"]["shouted"] in ("PLAYBACK", "UPLOAD") for r in shouts)
    client = redis.Redis.from_url(endpoints.redis_url)
    prefix = settings["redis"]["key_prefix"]
    assert sorted(r["event_id"] for r in feed(client, prefix, "echo")) == sorted(ids)
    latest = json.loads(client.get(f"{prefix}latest:echo:up7"))
    assert latest["event_id"] == "u7" and latest["plugin"] == "echo" and latest["model_version"] == "test-1"
    assert max(r["body"]["batch"] for r in echoes) > 1, "events were never batched together"
