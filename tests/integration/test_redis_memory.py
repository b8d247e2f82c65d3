"""Redis memory per event, measured through the real sink, and a Redis that refuses writes.

Both tests start their own ``redis-server`` (no persistence) so the figures and the
``maxmemory`` refusal concern this test alone. Run with ``-s`` to see the figures that
docs/operations.md ("Redis memory") quotes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from harness import WorkerProcess, committed_to_end, create_topics, feed, make_settings, playback, produce, wait_for
from redis.asyncio import Redis as AsyncRedis
from streamproc_recommender.history import apply_event
from streamproc_recommender.plugin import DEFAULT_HISTORY_SIZE, DEFAULT_WATCHED_SIZE

from streamproc.config import RedisSettings
from streamproc.dev.stack import free_ports
from streamproc.engine.keys import RedisKeys
from streamproc.engine.sinks import RedisSink
from streamproc.engine.state import StateWrite
from streamproc.events import decode_event
from streamproc.records import ResultRecord, input_digest

pytestmark = pytest.mark.integration

# Bounds quoted in docs/operations.md ("Redis memory"); the measured figures sit below them.
SEEN_MARKER_BYTES = 200  # a UUID event id, a plugin name of up to 12 characters, the default prefix
RECORD_OVERHEAD_BYTES = 200  # of a feed entry or a latest key, beyond the result record's JSON
STATE_KEY_BYTES = 26_000  # a recommender history of 200 items, 250 items watched, 64 recent ids


NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


@contextmanager
def redis_server(*args: str) -> Iterator[redis.Redis]:
    """A private ``redis-server`` on a free loopback port, without persistence."""
    port = free_ports(1)[0]
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            *NO_PERSISTENCE,
            *args,
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(port=port)
    try:
        wait_for(lambda: _answers(client), 10, "redis-server to answer")
        yield client
    finally:
        server.terminate()
        server.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def fill(client: redis.Redis, filler_bytes: int = 8 * 1024 * 1024, chunk_bytes: int = 64 * 1024) -> None:
    """Make Redis full: filler keys, then ``maxmemory`` lowered to half the fillers under
    the memory used (a margin over client buffers Redis frees later), so every write is
    refused (``noeviction``) until the fillers are deleted."""
    for i in range(filler_bytes // chunk_bytes):
        client.set(f"filler:{i}", b"x" * chunk_bytes)
    client.config_set("maxmemory", client.info("memory")["used_memory"] - filler_bytes // 2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", "1")


def _family_bytes(client: redis.Redis, pattern: str) -> tuple[int, int]:
    """(keys, bytes) of every key matching ``pattern``, by ``MEMORY USAGE`` (all samples)."""
    keys = list(client.scan_iter(match=pattern, count=1000))
    return len(keys), sum(client.memory_usage(k, samples=0) or 0 for k in keys)


def test_redis_memory_per_event_is_within_the_documented_bounds() -> None:
    users, per_user, batch = 20, 250, 250
    settings = RedisSettings(key_prefix="streamproc:")
    keys = RedisKeys(settings.key_prefix)
    states: dict[str, object] = {}
    recent: dict[str, list[str]] = {}
    results: list[ResultRecord] = []
    writes: list[StateWrite] = []
    for i in range(users * per_user):
        user, event_id = f"user-{i % users:06d}", str(uuid.uuid4())
        _, raw = playback(event_id, user, str(10_000 + i), media="video")
        event = decode_event(raw)
        state_key = f"video:{user}"
        states[state_key] = apply_event(states.get(state_key), event, DEFAULT_HISTORY_SIZE, DEFAULT_WATCHED_SIZE)
        recent[state_key] = [*recent.get(state_key, []), event_id][-settings.state_recent_ids :]
        body = {
            "media": "video",
            "model_version": "recommender-2.1.0",
            "source": "model",
            "unknown_items": 3,
            "items": [{"item_id": f"video:{20_000 + k}", "score": 0.123456} for k in range(10)],
        }
        results.append(
            ResultRecord(
                event_id,
                "recommender",
                "recommender-2.1.0",
                "recommendation",
                state_key,
                event.ts,
                event.ts,
                body,
                input_digest=input_digest(raw),
            )
        )
        writes.append(
            StateWrite(
                keys.state("recommender", state_key),
                json.dumps(states[state_key], separators=(",", ":")),
                json.dumps(recent[state_key]),
                ("playback", 0),
                i,
                keys.owner("group", "playback", 0),
                1,
            )
        )
    with redis_server() as client:
        before = client.info("memory")["used_memory"]

        async def write_all() -> None:
            connection = AsyncRedis(port=client.connection_pool.connection_kwargs["port"])
            sink = RedisSink(connection, settings)
            for start in range(0, len(results), batch):
                await sink.write(results[start : start + batch], writes[start : start + batch])
            await connection.aclose()

        asyncio.run(write_all())
        total = client.info("memory")["used_memory"] - before
        seen = _family_bytes(client, "streamproc:seen:*")
        latest = _family_bytes(client, "streamproc:latest:*")
        state = _family_bytes(client, "streamproc:state:*")
        feed_key = keys.feed("recommendation")
        feed_entries, feed_bytes = client.xlen(feed_key), client.memory_usage(feed_key, samples=0)
    events = len(results)
    figures = {
        "events": events,
        "used_memory per event": total / events,
        "seen marker": seen[1] / seen[0],
        "feed entry": feed_bytes / feed_entries,
        "latest key": latest[1] / latest[0],
        "state key": state[1] / state[0],
        "record JSON": sum(len(r.to_json()) for r in results) / events,
    }
    print(json.dumps(figures, indent=1))
    assert seen[0] == events and latest[0] == users and state[0] == users and feed_entries == events
    assert figures["seen marker"] < SEEN_MARKER_BYTES
    assert figures["feed entry"] < figures["record JSON"] + RECORD_OVERHEAD_BYTES
    assert figures["latest key"] < figures["record JSON"] + RECORD_OVERHEAD_BYTES
    assert figures["state key"] < STATE_KEY_BYTES


def test_redis_refusing_writes_holds_every_ack_until_memory_is_freed_and_loses_nothing(
    endpoints, unique, tmp_path: Path, test_plugins_path: Path
) -> None:
    before, during, stall_s = 10, 30, 4.0
    with redis_server("--maxmemory", "32mb", "--maxmemory-policy", "noeviction") as client:
        port = client.connection_pool.connection_kwargs["port"]
        settings = make_settings(
            endpoints, unique, {}, enabled_plugins=["echo"], stall_timeout_s=stall_s, publish_retry_s=0.2
        )
        settings["redis"]["url"] = f"redis://127.0.0.1:{port}/0"
        prefix = settings["redis"]["key_prefix"]
        create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
        worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
        try:
            first = [playback(f"m{i}", "u1", "7") for i in range(before)]
            produce(endpoints.kafka_bootstrap, f"{unique}-playback", first)
            wait_for(lambda: len(feed(client, prefix, "echo")) == before, 60, "results while Redis has room")
            wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, settings), 60, "the first records committed")

            fill(client)
            produce(
                endpoints.kafka_bootstrap,
                f"{unique}-playback",
                [playback(f"m{i}", "u1", "7") for i in range(before, before + during)],
            )
            wait_for(lambda: worker.metric("streamproc_sink_failures_total", sink="redis") >= 3, 60, "refused writes")
            wait_for(lambda: worker.http("/healthz")[0] == 503, 4 * stall_s + 30, "/healthz to fail on the stall")
            reason = worker.http("/healthz")[1]
            assert "none acked" in reason, reason
            assert len(feed(client, prefix, "echo")) == before, "nothing is published while Redis refuses"
            assert not committed_to_end(endpoints.kafka_bootstrap, settings), "refused records were committed"
            assert worker.metric("streamproc_in_flight_events") > 0

            client.delete(*client.keys("filler:*"))  # memory freed: the publisher's next retry goes through
            wait_for(lambda: len(feed(client, prefix, "echo")) == before + during, 60, "results after memory is freed")
            wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, settings), 60, "everything committed")
            wait_for(lambda: worker.http("/healthz")[0] == 200, 30, "/healthz to recover")
        finally:
            worker.terminate()
        ids = [r["event_id"] for r in feed(client, prefix, "echo")]
    assert sorted(ids) == sorted(f"m{i}" for i in range(before + during)), "lost or repeated results"
