"""Records real producers send, generated whole, against a real worker, broker and Redis.

The promise under test: every record ends as exactly one result or exactly one dead letter
with its reason, the worker keeps consuming, its group commits to the end of every
partition, and its liveness probe stays green. Records are generated whole (hypothesis):
valid events with one mutation each (a field dropped, retyped or replaced by a giant,
non-finite or nested value, an extra field, the bytes truncated or prefixed with invalid
UTF-8), tombstones, random bytes, deep nesting and an oversize record, with keys that are
the event key, random bytes or absent, and headers: none, many, a huge one, repeated
names, values that are not UTF-8, null values. The engine reads no header: a record's
headers must change nothing about how it ends. A header *name* that is not UTF-8 stops the
consumer before the engine sees the record (aiokafka decodes names strictly); its test is
an expected failure until that is fixed. A plugin that hangs leaves at most
``max_abandoned_threads`` threads behind, and health says so.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from aiokafka import AIOKafkaProducer
from harness import (
    WorkerProcess,
    audio,
    committed_to_end,
    create_topics,
    make_settings,
    produce,
    read_topic,
    wait_for,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from streamproc.media import encode_wav

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
    [
        10**30,
        10**400,
        -(10**30),
        float("nan"),
        float("inf"),
        1e308,
        -1,
        "",
        "x" * 300,
        [],
        {},
        None,
        True,
        "\u0000",
        "💥" * 50,
    ]
)


Headers = list[tuple[bytes, bytes | None]]
"""A record's headers as they go on the wire: raw name bytes, value bytes or null."""

HEADER_NAME = st.text(max_size=12).map(str.encode)
"""Any UTF-8 name. A name that is not UTF-8 has a test of its own (it crashes the consumer)."""
HEADER_VALUE = st.none() | st.binary(max_size=64) | st.sampled_from([b"\xff\xfe\xfd", b"\x00", b""])
HEADERS = st.one_of(
    st.just([]),  # none
    st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), min_size=100, max_size=400),  # many
    st.integers(64 * 1024, 512 * 1024).map(lambda n: [(b"huge", b"\xff" * n)]),  # one huge value
    st.tuples(HEADER_NAME, st.lists(HEADER_VALUE, min_size=2, max_size=5)).map(  # one name, repeated
        lambda named: [(named[0], value) for value in named[1]]
    ),
    st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), max_size=8),  # a mix
)


class RawHeaderName(str):
    """A header name that goes on the wire as the given bytes, UTF-8 or not.

    kafka-python's record builder writes a name as ``name.encode("utf-8")``; Kafka itself
    stores a name as any bytes (the Java client decodes it leniently), so a producer can
    send one that is not UTF-8. This is how the test puts such a name on the wire."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


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
def hostile_record(draw: st.DrawFn, ident: str, kind: str) -> tuple[bytes | None, bytes | None, Headers, str]:
    """(key, value, headers, kind): one generated record of ``kind``, with the id ``ident``
    where it has one."""
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
    return key, value, draw(HEADERS), kind


@pytest.fixture(scope="module", params=["at_least_once", "exactly_once"])
def hostile_worker(
    request: pytest.FixtureRequest, endpoints, tmp_path_factory, test_plugins_path: Path
) -> Iterator[tuple[WorkerProcess, dict[str, Any]]]:
    """A worker under each processing guarantee: every hostile-record test runs in both."""
    name = f"hostile-{request.param.replace('_', '')}-{int(time.time())}"
    worker_settings = make_settings(
        endpoints, name, {}, enabled_plugins=["echo"], kafka={"processing_guarantee": request.param}
    )
    create_topics(endpoints.kafka_bootstrap, [*worker_settings["kafka"]["input_topics"].values(), f"{name}-dlq"])
    worker = WorkerProcess(worker_settings, tmp_path_factory.mktemp("hostile"), test_plugins_path).start()
    yield worker, worker_settings
    worker.terminate()


def produce_all(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, Headers]]
) -> list[tuple[int, int]]:
    """Send every record with its headers exactly as given; returns each one's (partition, offset).

    Records with a null header value go through aiokafka (kafka-python cannot send one: it
    refuses ``None`` and would write an empty value); the others through kafka-python, whose
    builder lets ``RawHeaderName`` put a name that is not UTF-8 on the wire (aiokafka's
    cannot)."""
    nulls = [i for i, (_, _, headers) in enumerate(records) if any(v is None for _, v in headers)]
    positions: dict[int, tuple[int, int]] = {}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024)
    futures = {
        i: producer.send(topic, key=key, value=value, headers=[(RawHeaderName(n), v) for n, v in headers])
        for i, (key, value, headers) in enumerate(records)
        if i not in nulls
    }
    producer.flush()
    positions.update({i: (m.partition, m.offset) for i, m in ((i, f.get(timeout=30)) for i, f in futures.items())})
    producer.close()
    positions.update(asyncio.run(_produce_with_null_headers(bootstrap, topic, {i: records[i] for i in nulls})))
    return [positions[i] for i in range(len(records))]


async def _produce_with_null_headers(
    bootstrap: str, topic: str, records: dict[int, tuple[bytes | None, bytes | None, Headers]]
) -> dict[int, tuple[int, int]]:
    """Send ``records`` through aiokafka (names as text: its builder takes text only)."""
    if not records:
        return {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        sent = {}
        for i, (key, value, headers) in records.items():
            named = [(n.decode("utf-8", "replace"), v) for n, v in headers]
            meta = await producer.send_and_wait(topic, key=key, value=value, headers=named)
            sent[i] = (meta.partition, meta.offset)
        return sent
    finally:
        await producer.stop()


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
    positions = produce_all(endpoints.kafka_bootstrap, topic, [record[:3] for record in generated])
    wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, worker_settings), 120, "every record committed")
    letters = [
        d
        for d in read_topic(endpoints.kafka_bootstrap, f"{worker_settings['app_id'][5:]}-dlq", 0, 5)
        if d["topic"] == topic
    ]
    results = read_topic(endpoints.kafka_bootstrap, f"{worker_settings['app_id'][5:]}-out-echo", 0, 5)
    lettered = {(d["partition"], d["offset"]): d for d in letters}
    answered = {r["event_id"] for r in results}
    for (_, value, _, kind), position, n in zip(generated, positions, range(BATCH), strict=True):
        letter = lettered.get(position)
        has_result = f"h{batch}-{n}" in answered
        assert (letter is not None) != has_result, f"record {n} ({kind}) has {'both' if letter else 'neither'}"
        if letter is not None:
            assert letter["reason"] and " at 0x" not in letter["reason"]
            assert letter["stage"] != "engine", f"record {n} ({kind}) met an engine bug: {letter['reason']}"
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
    produce_all(endpoints.kafka_bootstrap, topic, [(b"u1", big, []), (b"u1", after, [])])
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
    positions = produce_all(
        endpoints.kafka_bootstrap, topic, [(b"a", original, []), (b"a", original, []), (b"a", impostor, [])]
    )
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


@pytest.mark.xfail(
    strict=True,
    reason="aiokafka decodes header names strictly: UnicodeDecodeError in the fetcher crashes the Faust worker",
)
def test_a_header_name_that_is_not_utf8_ends_as_a_result_and_the_worker_goes_on(
    endpoints, tmp_path: Path, test_plugins_path: Path, unique: str
) -> None:
    """Kafka stores a header name as bytes and the Java client decodes it leniently; a
    producer (librdkafka takes any bytes) can send one that is not UTF-8. Its record must
    end like any other, and the worker must stay up."""
    worker_settings = make_settings(endpoints, f"badheader-{unique}", {}, enabled_plugins=["echo"])
    create_topics(endpoints.kafka_bootstrap, worker_settings["kafka"]["input_topics"].values())
    worker = WorkerProcess(worker_settings, tmp_path, test_plugins_path).start()
    try:
        event = {"id": "named", "type": "upload", "ts": int(time.time() * 1000), "user_id": "u1", "upload_id": "n"}
        topic = worker_settings["kafka"]["input_topics"]["upload"]
        produce_all(endpoints.kafka_bootstrap, topic, [(b"u1", json.dumps(event).encode(), [(b"\xc3(", b"v")])])
        wait_for(
            lambda: worker.proc.poll() is not None or committed_to_end(endpoints.kafka_bootstrap, worker_settings),
            60,
            "the record committed or the worker gone",
        )
        assert worker.proc.poll() is None, f"the worker died:\n{worker.log_tail()}"
        results = read_topic(endpoints.kafka_bootstrap, f"badheader-{unique}-out-echo", 1, 30)
        assert [r["event_id"] for r in results] == ["named"]
    finally:
        worker.kill()


def test_a_plugin_that_hangs_leaves_at_most_max_abandoned_threads_and_health_says_so(
    endpoints, tmp_path: Path, test_plugins_path: Path, unique: str
) -> None:
    """Thread mode: a hung batch's thread runs on after its timeout. With
    ``max_abandoned_threads: 1`` the first hung batch leaves one thread; the plugin's next
    batch is refused at once (a timeout dead letter saying why, committed like any other),
    ``/healthz`` answers 503 naming the plugin and the gauge counts the thread; once it
    returns, health is green again and batches run."""
    hang_s = 15.0
    name = f"hang-{unique}"
    worker_settings = make_settings(
        endpoints,
        name,
        {"slow": {"options": {"delay_s": 0.0, "hang_s": hang_s}}},
        enabled_plugins=["slow"],
        infer_timeout_s=1.0,
        max_abandoned_threads=1,
    )
    create_topics(endpoints.kafka_bootstrap, worker_settings["kafka"]["input_topics"].values())
    worker = WorkerProcess(worker_settings, tmp_path, test_plugins_path).start()
    wav = encode_wav(np.zeros(80, np.float32))
    topic = worker_settings["kafka"]["input_topics"]["audio"]
    try:
        produce(endpoints.kafka_bootstrap, topic, [audio("hang-1", "x1", wav)])
        wait_for(lambda: worker.http("/healthz")[0] == 503, 30, "/healthz to fail")
        body = worker.http("/healthz")[1]
        assert "plugin slow" in body and "max_abandoned_threads 1" in body, body
        produce(endpoints.kafka_bootstrap, topic, [audio("a-2", "x2", wav)])
        wait_for(lambda: committed_to_end(endpoints.kafka_bootstrap, worker_settings), 30, "both records committed")
        letters = {d["event_id"]: d for d in read_topic(endpoints.kafka_bootstrap, f"{name}-dlq", 2, 30)}
        assert letters["hang-1"]["stage"] == "timeout" and "exceeded" in letters["hang-1"]["reason"]
        assert letters["a-2"]["stage"] == "timeout" and letters["a-2"]["reason"].startswith("not run:")
        wait_for(lambda: worker.metric("streamproc_abandoned_threads", plugin="slow") == 1, 10, "the thread counted")
        wait_for(lambda: worker.http("/healthz")[0] == 200, hang_s + 30, "/healthz green once the thread returned")
        produce(endpoints.kafka_bootstrap, topic, [audio("a-3", "x3", wav)])
        assert [r["event_id"] for r in read_topic(endpoints.kafka_bootstrap, f"{name}-out-slow", 1, 30)] == ["a-3"]
        wait_for(lambda: worker.metric("streamproc_abandoned_threads", plugin="slow") == 0, 10, "the gauge back at 0")
    finally:
        worker.kill()
