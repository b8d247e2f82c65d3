"""Records real producers send, generated whole, against a real worker, broker and Redis.

The promise under test: every record ends as exactly one result or exactly one dead letter
with its reason, the worker keeps consuming, its group commits to the end of every
partition, and its liveness probe stays green. Records are generated whole (hypothesis):
valid events with one mutation each (a field dropped, retyped or replaced by a giant,
non-finite or nested value, an extra field, the bytes truncated or prefixed with invalid
UTF-8), tombstones, random bytes, deep nesting and an oversize record, with keys that are
the event key, random bytes or absent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import WorkerProcess, committed_to_end, create_topics, make_settings, read_topic, wait_for
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

pytestmark = pytest.mark.integration

BATCH = 40
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
KINDS = (
    "valid",
    "drop",
    "retype",
    "hostile",
    "extra",
    "truncate",
    "bad-utf8",
    "tombstone",
    "random",
    "nested",
    "array",
)
REFUSED_WHOLE = ("tombstone", "truncate", "bad-utf8", "random", "nested", "array")
HOSTILE_VALUES = st.sampled_from(
    [10**30, -(10**30), float("nan"), float("inf"), 1e308, -1, "", "x" * 300, [], {}, None, True, "\u0000", "💥" * 50]
)


@st.composite
def event_doc(draw: st.DrawFn, ident: str) -> dict[str, Any]:
    """A valid playback or upload event with the id ``ident``."""
    base = {
        "id": ident,
        "ts": int(time.time() * 1000) - draw(st.integers(0, 10**9)),
        "user_id": f"u{draw(st.integers(0, 9))}",
    }
    if draw(st.booleans()):
        action = draw(st.sampled_from(["start", "progress", "complete", "skip", "like"]))
        return {
            **base,
            "type": "playback",
            "item_id": f"i{draw(st.integers(1, 99))}",
            "action": action,
            "position_s": draw(st.floats(0, 1e4)),
            "duration_s": draw(st.floats(1, 1e4)),
            "media": "video",
        }
    return {**base, "type": "upload", "upload_id": f"up-{ident}", "title": draw(st.text(min_size=1, max_size=60))}


@st.composite
def hostile_record(draw: st.DrawFn, ident: str, kind: str) -> tuple[bytes | None, bytes | None, str]:
    """(key, value, kind): one generated record of ``kind``, with the id ``ident`` where it has one."""
    doc = draw(event_doc(ident))
    field = draw(st.sampled_from(sorted(k for k in doc if k != "id")))
    if kind == "drop":
        del doc[field]
    elif kind == "retype":
        doc[field] = draw(JSON_VALUE)
    elif kind == "hostile":
        doc[field] = draw(HOSTILE_VALUES)
    elif kind == "extra":
        doc[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in doc))] = draw(JSON_VALUE)
    value: bytes | None = json.dumps(doc, allow_nan=True).encode()
    if kind == "truncate":
        value = value[: draw(st.integers(0, len(value) - 1))]
    elif kind == "bad-utf8":
        value = b"\xff\xfe" + value
    elif kind == "tombstone":
        value = None
    elif kind == "random":
        value = draw(st.binary(max_size=200))
    elif kind == "nested":
        value = b"[" * draw(st.integers(1_000, 200_000))
    elif kind == "array":
        value = json.dumps([doc]).encode()
    user = doc.get("user_id")
    key = draw(st.sampled_from([user.encode() if isinstance(user, str) else None, None, b"\x00\xff"]))
    if value is None and key is None:  # a tombstone always has a key (log compaction deletes by key)
        key = b"deleted-key"
    return key, value, kind


@pytest.fixture(scope="module")
def hostile_worker(
    endpoints, tmp_path_factory, test_plugins_path: Path
) -> Iterator[tuple[WorkerProcess, dict[str, Any]]]:
    name = f"hostile-{int(time.time())}"
    worker_settings = make_settings(endpoints, name, {}, enabled_plugins=["echo"])
    create_topics(endpoints.kafka_bootstrap, [*worker_settings["kafka"]["input_topics"].values(), f"{name}-dlq"])
    worker = WorkerProcess(worker_settings, tmp_path_factory.mktemp("hostile"), test_plugins_path).start()
    yield worker, worker_settings
    worker.terminate()


def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Send every record; returns each one's (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024)
    futures = [producer.send(topic, key=key, value=value) for key, value in records]
    producer.flush()
    positions = [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
    producer.close()
    return positions


counter = iter(range(10**6))


# No shrinking: each example is a batch against a real worker; a failure reports the batch.
@settings(
    max_examples=3,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_generated_record_ends_as_one_result_or_one_dead_letter_and_everything_is_committed(
    hostile_worker: tuple[WorkerProcess, dict[str, Any]], endpoints, data: st.DataObject
) -> None:
    worker, worker_settings = hostile_worker
    batch = next(counter)
    kinds = [KINDS[n % len(KINDS)] for n in range(BATCH)]  # every kind in every batch
    generated = [data.draw(hostile_record(f"h{batch}-{n}", kind), label=f"record {n}") for n, kind in enumerate(kinds)]
    topic = worker_settings["kafka"]["input_topics"]["upload"]
    positions = produce_all(endpoints.kafka_bootstrap, topic, [(key, value) for key, value, _ in generated])
    wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, worker_settings), 120, "every record committed")
    letters = [
        d
        for d in read_topic(endpoints.kafka_bootstrap, f"{worker_settings['app_id'][5:]}-dlq", 0, 5)
        if d["topic"] == topic
    ]
    results = read_topic(endpoints.kafka_bootstrap, f"{worker_settings['app_id'][5:]}-out-echo", 0, 5)
    lettered = {(d["partition"], d["offset"]): d for d in letters}
    answered = {r["event_id"] for r in results}
    for (_, value, kind), position, n in zip(generated, positions, range(BATCH), strict=True):
        letter = lettered.get(position)
        has_result = f"h{batch}-{n}" in answered
        assert (letter is not None) != has_result, f"record {n} ({kind}) has {'both' if letter else 'neither'}"
        if letter is not None:
            assert letter["reason"] and " at 0x" not in letter["reason"]
            assert letter["original_bytes"] == (None if value is None else len(value))
        if kind in REFUSED_WHOLE:
            assert letter is not None and letter["stage"] == "decode", f"record {n} ({kind}) was not refused"
    assert worker.proc.poll() is None
    assert worker.http("/healthz")[0] == 200


def test_an_oversize_record_is_dead_lettered_whole_and_the_partition_goes_on(
    hostile_worker: tuple[WorkerProcess, dict[str, Any]], endpoints
) -> None:
    worker, worker_settings = hostile_worker
    name = worker_settings["app_id"].removeprefix("test-")
    big = json.dumps({"id": "huge", "type": "upload", "title": "x" * (9 * 1024 * 1024)}).encode()  # > 8 MiB limit
    after = json.dumps(
        {
            "id": "after-huge",
            "type": "playback",
            "ts": int(time.time() * 1000),
            "user_id": "u1",
            "item_id": "i1",
            "action": "start",
            "position_s": 0.0,
            "duration_s": 9.0,
            "media": "video",
        }
    ).encode()
    topic = worker_settings["kafka"]["input_topics"]["upload"]
    produce_all(endpoints.kafka_bootstrap, topic, [(b"u1", big), (b"u1", after)])
    wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, worker_settings), 120, "the oversize record committed")
    letters = read_topic(endpoints.kafka_bootstrap, f"{name}-dlq", 1, 30)
    (letter,) = [d for d in letters if d["original_bytes"] == len(big)]  # too big to peek at its id
    assert letter["stage"] == "decode" and "exceeds the limit" in letter["reason"]
    assert letter["original_bytes"] == len(big) and not letter["original_truncated"]
    assert "after-huge" in {r["event_id"] for r in read_topic(endpoints.kafka_bootstrap, f"{name}-out-echo", 1)}
    assert worker.http("/healthz")[0] == 200


def test_an_event_id_reused_by_another_input_is_dead_lettered_and_a_republished_event_is_not(
    hostile_worker: tuple[WorkerProcess, dict[str, Any]], endpoints
) -> None:
    worker, worker_settings = hostile_worker
    name = worker_settings["app_id"].removeprefix("test-")
    event = {"id": "reused-id", "type": "upload", "ts": int(time.time() * 1000), "user_id": "u1", "upload_id": "a"}
    original = json.dumps({**event, "title": "the first"}).encode()
    impostor = json.dumps({**event, "title": "another upload, same id"}).encode()
    topic = worker_settings["kafka"]["input_topics"]["upload"]
    positions = produce_all(endpoints.kafka_bootstrap, topic, [(b"a", original), (b"a", original), (b"a", impostor)])
    wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, worker_settings), 120, "the three records committed")
    letters = [d for d in read_topic(endpoints.kafka_bootstrap, f"{name}-dlq", 1, 30) if d["event_id"] == "reused-id"]
    assert [(d["stage"], d["plugin"], (d["partition"], d["offset"])) for d in letters] == [
        ("identity", "echo", positions[2])
    ]
    feed = redis.Redis.from_url(worker_settings["redis"]["url"]).xrange(
        f"{worker_settings['redis']['key_prefix']}feed:echo"
    )
    in_feed = [json.loads(fields[b"record"]) for _, fields in feed]
    assert [r["event_id"] for r in in_feed].count("reused-id") == 1  # once, for the first input
    assert worker.http("/healthz")[0] == 200
