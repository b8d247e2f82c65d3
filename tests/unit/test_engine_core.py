"""The engine and its ordered publisher, in-process, with recording sinks.

The sinks here record what they are given (and can fail on demand); the plugins are the
real fixture plugins (``tests/fixture_plugins``). What the real-stack integration tests
prove end to end, these prove in well under a second each: per-partition order, acks
only after both sinks acknowledged, chaining, dead letters with their stages, retries.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)

from streamproc.config import PluginSettings, Settings
from streamproc.engine import engine as engine_module
from streamproc.engine.delivery import KafkaMessage
from streamproc.engine.engine import Engine
from streamproc.engine.keys import RedisKeys
from streamproc.engine.runtime import BatchStats, PluginRuntime
from streamproc.engine.state import KeyedStateStore, StateWrite, _Entry
from streamproc.errors import PartitionFenced
from streamproc.events import Event
from streamproc.ops.metrics import Metrics
from streamproc.plugin import Plugin
from streamproc.records import DeadLetter, ResultRecord, SourceRecord
from streamproc.registry import build_router, load_plugins


@pytest.fixture(autouse=True)
def fixture_plugins(test_plugins_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture plugins, discoverable through their entry points."""
    monkeypatch.syspath_prepend(str(test_plugins_path))


@dataclass
class RecordingRedisSink:
    """Records results and state writes; fails its first ``failures`` writes; refuses a
    result whose plugin and event id were published for another input (as the Lua script)."""

    failures: int = 0
    results: list[ResultRecord] = field(default_factory=list)
    state_writes: list[StateWrite] = field(default_factory=list)
    seen: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: int = 0

    async def write(self, results: Sequence[ResultRecord], state_writes: Sequence[StateWrite]) -> list[ResultRecord]:
        """Records; refuses a result whose (plugin, event id) was published for another input."""
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis is down (recording sink)")
        self.state_writes += state_writes
        refused = []
        for result in results:
            seen = self.seen.setdefault((result.plugin, result.event_id), result.input_digest)
            if seen != result.input_digest:
                refused.append(result)
            else:
                self.results.append(result)
        return refused


@dataclass
class RecordingKafkaSink:
    """Records output records, dead letters and committed offsets; fails its first
    ``failures`` sends, and refuses for good any message larger than ``max_bytes`` or for a
    topic in ``refused_topics``. ``atomic``: like a transaction, a send with a refused
    message records nothing and commits no offset."""

    failures: int = 0
    max_bytes: int = 1024 * 1024
    refused_topics: tuple[str, ...] = ()
    atomic: bool = False
    fenced: tuple[tuple[str, int], ...] = ()
    results: list[tuple[str, ResultRecord]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    letters_json: list[dict[str, Any]] = field(default_factory=list)
    commits: list[tuple[tuple[str, int], int]] = field(default_factory=list)
    calls: int = 0
    dead_letter_topic: str = "dlq"
    max_original_bytes: int = 4096

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(
        self, messages: Sequence[KafkaMessage], partition: tuple[str, int], next_offset: int
    ) -> list[tuple[KafkaMessage, KafkaError]]:
        self.calls += 1
        if partition in self.fenced:
            raise PartitionFenced(partition, "fenced by another producer (recording sink)")
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("kafka is down (recording sink)")
        refused: list[tuple[KafkaMessage, KafkaError]] = []
        for message in messages:
            if len(message.value) > self.max_bytes:
                refused.append((message, MessageSizeTooLargeError(f"{len(message.value)} bytes")))
            elif message.topic in self.refused_topics:
                refused.append((message, TopicAuthorizationFailedError(message.topic)))
        if refused and self.atomic:
            return refused
        for message in messages:
            if any(message is r for r, _ in refused):
                continue
            if message.letter is not None:
                self.dead_letters.append(message.letter)
                self.letters_json.append(json.loads(message.value))
            else:
                assert message.result is not None
                self.results.append(message.result)
        self.commits.append((partition, next_offset))
        return refused


class MemoryStateStore(KeyedStateStore):
    """Keyed state starting empty for every key (no Redis read); writes go to the sinks."""

    def __init__(self, recent_ids: int = 64) -> None:
        super().__init__(redis=None, keys=RedisKeys("test:"), group="test", ttl_s=60, recent_ids=recent_ids)  # type: ignore[arg-type]

    async def _load(self, redis_key: str) -> _Entry:
        return _Entry(state=None, applied={}, ids=[])

    async def _epoch(self, partition: tuple[str, int]) -> int:
        return 1  # every partition is this member's


@dataclass
class Run:
    redis: RecordingRedisSink
    kafka: RecordingKafkaSink
    acked: list[str]
    outputs_at_ack: dict[str, int]
    tasks_created: int = 0
    """Tasks the event loop created while the engine ran (the engine's, the batchers' and the publisher's)."""
    batch_sizes: dict[str, list[int]] = field(default_factory=dict)
    """Each plugin's model batches, in the order they ran."""


def playback(n: int, user: str = "u1") -> bytes:
    """A playback event of ``user`` (the records below are keyed ``u1``)."""
    doc = {
        "id": f"evt-{n}",
        "type": "playback",
        "ts": 1_700_000_000_000 + n,
        "user_id": user,
        "item_id": f"item-{n}",
        "action": "start",
        "position_s": 0.0,
        "duration_s": 60.0,
        "media": "video",
    }
    return json.dumps(doc).encode()


def upload(n: int, title: str) -> bytes:
    doc = {"id": f"up-{n}", "type": "upload", "ts": 1_700_000_000_000 + n, "user_id": "u1", "upload_id": f"u{n}"}
    return json.dumps({**doc, "title": title}).encode()


def record(value: bytes, offset: int, partition: int = 0) -> SourceRecord:
    """A record keyed by its event's user, as a well-behaved producer sends playback events."""
    return SourceRecord("events", partition, offset, b"u1", value)


def run_engine(
    records: list[SourceRecord],
    plugins: list[str],
    redis_failures: int = 0,
    kafka_failures: int = 0,
    extra: Sequence[Plugin] = (),
    kafka: RecordingKafkaSink | None = None,
) -> Run:
    """Every record through a started engine, drained; ``extra`` plugins are loaded beside
    the installed ones named in ``plugins``. The records are accepted as one fetch (the
    loop does not yield between them, as Faust's agent hands over a fetched buffer)."""
    settings = Settings(enabled_plugins=plugins, publish_retry_s=0.01)
    runtimes, reports = load_plugins(settings)
    assert not [r.error for r in reports if r.error]
    for plugin in extra:
        runtimes[plugin.name] = PluginRuntime(plugin, PluginSettings(), torch.device("cpu"), None, infer_retries=1)
        runtimes[plugin.name].load()
    run = Run(RecordingRedisSink(redis_failures), kafka or RecordingKafkaSink(kafka_failures), [], {})

    def ack_of(source: SourceRecord) -> Callable[[], None]:
        def ack() -> None:
            run.acked.append(source.position)
            run.outputs_at_ack[source.position] = len(run.kafka.results) + len(run.kafka.dead_letters)

        return ack

    def count_task(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> asyncio.Task[Any]:
        run.tasks_created += 1
        return asyncio.Task(coro, loop=loop, **options)

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(count_task)
        engine = Engine(
            settings, runtimes, build_router(settings, runtimes), run.redis, run.kafka, MemoryStateStore(), Metrics()
        )  # type: ignore[arg-type]
        observe = engine._observe_batch

        def note_batch(runtime: PluginRuntime, stats: BatchStats) -> None:
            run.batch_sizes.setdefault(runtime.name, []).append(stats.size)
            observe(runtime, stats)

        for batcher in engine.batchers.values():
            batcher._observe = note_batch
        await engine.start()
        for source in records:
            await engine.accept(source, ack_of(source))
        assert await engine.drain(10.0)
        await engine.stop()

    asyncio.run(main())
    return run


def test_records_are_acked_in_offset_order_per_partition_after_their_outputs() -> None:
    records = [record(playback(n), offset=n // 2, partition=n % 2) for n in range(20)]
    run = run_engine(records, ["echo"])
    for partition in (0, 1):
        offsets = [int(p.rsplit("@", 1)[1]) for p in run.acked if p.startswith(f"events:{partition}@")]
        assert offsets == list(range(10))
    assert len(run.kafka.results) == 20 and len(run.redis.results) == 20
    for position, outputs in run.outputs_at_ack.items():
        partition, offset = position.removeprefix("events:").split("@")
        published = {r.event_id for _, r in run.kafka.results[:outputs]}
        assert f"evt-{int(offset) * 2 + int(partition)}" in published


def test_a_fetch_goes_to_each_plugin_in_whole_batches_without_a_task_per_record() -> None:
    records = [record(playback(n), offset=n // 2, partition=n % 2) for n in range(300)]
    run = run_engine(records, ["echo", "counter"])
    assert len(run.kafka.results) == 600 and len(run.acked) == 300
    for plugin in ("echo", "counter"):
        sizes = run.batch_sizes[plugin]
        assert sum(sizes) == 300
        assert len(sizes) == -(-300 // max(sizes)), f"{plugin}'s batches are not full: {sizes}"
    # per chunk of a model batch, not per record (the per-record engine made 938 here)
    assert run.tasks_created < 300 // 2, f"{run.tasks_created} tasks for 300 records"


def test_an_engine_bug_on_one_record_dead_letters_it_as_engine_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decode = engine_module.decode_event

    def decode_with_a_bug(value: bytes, *args: Any) -> Any:
        if b'"evt-3"' in value:
            raise RuntimeError("a bug in the engine")
        return decode(value, *args)

    monkeypatch.setattr(engine_module, "decode_event", decode_with_a_bug)
    run = run_engine([record(playback(n), offset=n) for n in range(6)], ["echo"])
    assert [letter.stage for letter in run.kafka.dead_letters] == ["engine"]
    assert run.kafka.dead_letters[0].reason == "RuntimeError: a bug in the engine"
    assert sorted(r.event_id for _, r in run.kafka.results) == [f"evt-{n}" for n in (0, 1, 2, 4, 5)]
    assert len(run.acked) == 6


def test_a_result_chains_to_the_plugin_that_consumes_its_kind() -> None:
    run = run_engine([record(playback(1), 0)], ["echo", "shout"])
    kinds = sorted(r.kind for _, r in run.kafka.results)
    assert kinds == ["echo", "shout"]
    shout = next(r for _, r in run.kafka.results if r.kind == "shout")
    assert shout.body == {"shouted": "PLAYBACK"} and shout.event_id == "evt-1"


def test_refusals_and_failures_are_dead_lettered_with_their_stage_and_later_records_go_on() -> None:
    records = [
        record(b"{not json", 0),
        record(upload(1, "refuse"), 1),
        record(upload(2, "boom"), 2),
        record(upload(3, "fine"), 3),
    ]
    run = run_engine(records, ["flaky"])
    stages = {(d.source.offset, d.stage, d.plugin) for d in run.kafka.dead_letters}
    assert stages == {(0, "decode", None), (1, "prepare", "flaky"), (2, "infer", "flaky")}
    assert all(d.refused_ts > 0 and d.reason for d in run.kafka.dead_letters)
    assert [r.event_id for _, r in run.kafka.results] == ["up-3"]
    assert run.acked == [f"events:0@{n}" for n in range(4)]


@pytest.mark.parametrize(("redis_failures", "kafka_failures"), [(2, 0), (0, 3), (1, 1)])
def test_a_failing_sink_is_retried_alone_and_nothing_is_acked_before_both_succeed(
    redis_failures: int, kafka_failures: int
) -> None:
    run = run_engine([record(playback(1), 0)], ["echo"], redis_failures, kafka_failures)
    assert run.acked == ["events:0@0"]
    assert len(run.redis.results) == 1 and len(run.kafka.results) == 1  # written once, not per attempt
    assert run.redis.calls == redis_failures + 1 and run.kafka.calls == kafka_failures + 1


def test_keyed_state_is_applied_once_per_record_in_input_order() -> None:
    records = [record(playback(n), n) for n in range(3)] + [record(playback(1), 1)]  # offset 1 redelivered
    run = run_engine(records, ["counter"])
    counts = [r.body["count"] for _, r in run.kafka.results]
    assert counts == [1, 2, 3, 3]
    assert [w.offset for w in run.redis.state_writes] == [0, 1, 2]


def test_keyed_state_remembers_as_many_event_ids_as_configured() -> None:
    from streamproc.events import decode_event

    settings = Settings(enabled_plugins=["counter"])
    counter = load_plugins(settings)[0]["counter"].plugin
    store = MemoryStateStore(recent_ids=2)
    limits = settings.limits.payload_limits()

    async def count_after(n: int, offset: int) -> int:
        state, _ = await store.apply(counter, decode_event(playback(n), limits), record(playback(n), offset))
        return int(state["count"])

    async def main() -> list[int]:
        return [await count_after(n, offset) for n, offset in ((0, 0), (1, 1), (2, 2), (2, 3), (0, 4))]

    # evt-2 again (offset 3) is among the 2 remembered ids; evt-0 again (offset 4) is not any more
    assert asyncio.run(main()) == [1, 2, 3, 3, 4]


def test_a_fenced_partition_leaves_no_cached_state_behind_and_the_next_read_starts_from_redis() -> None:
    """A zombie's cache holds effects its dropped batches never wrote; after the drop a key
    of that partition is read again (here: from empty), a key of another partition is kept."""
    from streamproc.events import decode_event

    settings = Settings(enabled_plugins=["counter"])
    counter = load_plugins(settings)[0]["counter"].plugin
    store = MemoryStateStore()
    limits = settings.limits.payload_limits()

    async def count(n: int, user: str, partition: int) -> int:
        value = playback(n, user)
        source = SourceRecord("events", partition, n, user.encode(), value)
        state, _ = await store.apply(counter, decode_event(value, limits), source)
        return int(state["count"])

    async def main() -> list[int]:
        counts = [await count(0, "u1", 0), await count(1, "u1", 0), await count(2, "u2", 1), await count(3, "u2", 1)]
        store.evict_partition(("events", 0))
        return [*counts, await count(4, "u1", 0), await count(5, "u2", 1)]

    assert asyncio.run(main()) == [1, 2, 1, 2, 1, 3]


def test_hostile_records_become_decode_dead_letters_with_their_identity_and_the_partition_goes_on() -> None:
    valid = json.loads(playback(9))
    hostile = [
        None,  # a tombstone
        playback(1).replace(b'"position_s": 0.0', b'"position_s": NaN'),
        playback(2).replace(b'"position_s": 0.0', b'"position_s": 1e999'),
        playback(3).replace(b'"position_s": 0.0', b'"position_s": ' + b"9" * 5000),
        json.dumps({**valid, "id": "evt-4", "ts": 10**30}).encode(),
        b"[" * 100_000,
    ]
    records = [SourceRecord("events", 0, n, b"key", value) for n, value in enumerate([*hostile, playback(9)])]
    run = run_engine(records, ["echo"])
    letters = {d.source.offset: d for d in run.kafka.dead_letters}
    assert sorted(letters) == [0, 1, 2, 3, 4, 5] and {d.stage for d in letters.values()} == {"decode"}
    assert "tombstone" in letters[0].reason and "NaN" in letters[1].reason and "out of range" in letters[2].reason
    assert "digits" in letters[3].reason and "in the future" in letters[4].reason
    assert (letters[4].event_id, letters[4].event_type) == ("evt-4", "playback")
    assert json.loads(letters[0].to_json())["original"] is None
    assert [r.event_id for _, r in run.kafka.results] == ["evt-9"]
    assert run.acked == [f"events:0@{n}" for n in range(7)]


class TensorResult(Plugin):
    """Returns a tensor in its result body: a plugin bug that must fail only its own event."""

    name = "tensorish"
    consumes = ("playback",)
    produces = "tensorish"

    def load(self, context: object) -> None:
        self.model_version = "t-1"

    def prepare(self, event: Event, state: object) -> str:
        return event.id

    def infer(self, batch: Sequence[str]) -> list[torch.Tensor]:
        return [torch.tensor(float(len(x))) for x in batch]

    def result(self, event: Event, output: torch.Tensor) -> dict[str, object]:
        return {"length": output}


def test_a_result_body_that_is_not_json_fails_only_its_event_and_plugin() -> None:
    run = run_engine([record(playback(1), 0)], ["echo"], extra=[TensorResult()])
    (letter,) = run.kafka.dead_letters
    assert (letter.stage, letter.plugin) == ("result", "tensorish")
    assert "not JSON" in letter.reason and "Tensor" in letter.reason
    assert [r.plugin for _, r in run.kafka.results] == ["echo"]
    assert run.acked == ["events:0@0"]


@pytest.mark.parametrize("atomic", [False, True], ids=["at_least_once", "exactly_once"])
def test_a_result_kafka_refuses_for_good_becomes_a_sink_dead_letter_instead_of_a_stall(atomic: bool) -> None:
    refusing = RecordingKafkaSink(refused_topics=("streamproc-echo",), atomic=atomic)
    run = run_engine([record(playback(1), 0), record(playback(2), 1)], ["echo"], kafka=refusing)
    assert run.kafka.results == [] and len(run.redis.results) == 2  # Redis took them
    assert [(d.stage, d.plugin, d.event_id) for d in run.kafka.dead_letters] == [
        ("sink", "echo", "evt-1"),
        ("sink", "echo", "evt-2"),
    ]
    assert "TopicAuthorizationFailedError" in run.kafka.dead_letters[0].reason
    assert run.acked == ["events:0@0", "events:0@1"]


def test_an_original_too_large_for_its_dead_letter_travels_as_size_hash_and_prefix() -> None:
    huge = b'{"id": "big", "type": "playback", "pad": "' + b"x" * 20_000 + b'"}'
    run = run_engine([record(huge, 0)], ["echo"], kafka=RecordingKafkaSink(max_bytes=12_000))
    (letter,) = run.kafka.letters_json
    assert letter["stage"] == "decode" and letter["event_id"] == "big" and letter["original_truncated"]
    assert letter["original_bytes"] == len(huge) and len(letter["original_sha256"]) == 64
    assert base64.b64decode(letter["original"]) == huge[:4096]  # the sink's max_original_bytes
    assert run.acked == ["events:0@0"]


class SetState(TensorResult):
    """Keeps its state in a set: not JSON, a plugin bug that must fail only its own events."""

    name = "setstate"
    produces = "setstate"

    def state_key(self, event: Event) -> str | None:
        return event.key

    def update_state(self, state: Mapping[str, Any] | None, event: Event) -> Mapping[str, Any]:
        return {"seen": {event.id}}

    def result(self, event: Event, output: torch.Tensor) -> dict[str, object]:
        return {"length": float(output)}


def test_a_state_that_is_not_json_is_a_state_dead_letter_of_its_plugin_only() -> None:
    run = run_engine([record(playback(1), 0), record(playback(2), 1)], ["echo"], extra=[SetState()])
    assert [(d.stage, d.plugin, d.event_id) for d in run.kafka.dead_letters] == [
        ("state", "setstate", "evt-1"),
        ("state", "setstate", "evt-2"),
    ]
    assert "not JSON" in run.kafka.dead_letters[0].reason
    assert [(r.plugin, r.event_id) for _, r in run.kafka.results] == [("echo", "evt-1"), ("echo", "evt-2")]
    assert run.redis.state_writes == [] and run.acked == ["events:0@0", "events:0@1"]


def test_a_record_keyed_unlike_its_event_is_refused_by_a_stateful_plugin_only() -> None:
    mismatched = SourceRecord("events", 0, 0, b"someone-else", playback(1, user="u1"))
    run = run_engine([mismatched, record(playback(2, user="u1"), 1)], ["counter", "echo"])
    (letter,) = run.kafka.dead_letters
    assert (letter.stage, letter.plugin, letter.event_id) == ("state", "counter", "evt-1")
    assert "Kafka key b'someone-else' is not its event key 'u1'" in letter.reason
    assert sorted((r.plugin, r.event_id) for _, r in run.kafka.results) == [
        ("counter", "evt-2"),
        ("echo", "evt-1"),
        ("echo", "evt-2"),
    ]


def test_metrics_expose_the_counters_plugins_register_in_the_default_registry() -> None:
    from prometheus_client import REGISTRY, Counter

    counter = Counter("streamproc_testplugin_things_total", "things a plugin counted", registry=REGISTRY)
    try:
        counter.inc(3)
        text = Metrics().exposition().decode()
        assert "streamproc_testplugin_things_total 3.0" in text and "streamproc_in_flight_events" in text
    finally:
        REGISTRY.unregister(counter)


def test_another_input_reusing_an_event_id_is_dead_lettered_and_a_replay_is_not() -> None:
    first = playback(1)
    impostor = playback(1).replace(b'"item-1"', b'"item-99"')  # same id, another event
    run = run_engine([record(first, 0), record(first, 1), record(impostor, 2)], ["echo"])
    (letter,) = run.kafka.dead_letters
    assert (letter.stage, letter.plugin, letter.event_id, letter.source.offset) == ("identity", "echo", "evt-1", 2)
    assert "already published by echo for another input" in letter.reason
    assert [r.event_id for _, r in run.kafka.results] == ["evt-1", "evt-1"]  # the record and its replay
    assert run.acked == ["events:0@0", "events:0@1", "events:0@2"]


def test_each_publication_batch_commits_the_offset_after_its_last_record_with_its_outputs() -> None:
    records = [record(playback(n), offset=n // 2, partition=n % 2) for n in range(20)]
    run = run_engine(records, ["echo"], kafka=RecordingKafkaSink(atomic=True))
    for partition in (0, 1):
        offsets = [offset for (_, p), offset in run.kafka.commits if p == partition]
        assert offsets == sorted(offsets) and offsets[-1] == 10  # the next offset to read
    assert sorted(r.event_id for _, r in run.kafka.results) == sorted(f"evt-{n}" for n in range(20))


def test_a_fenced_partition_drops_its_records_unpublished_and_the_other_partitions_go_on() -> None:
    records = [record(playback(n), offset=n // 2, partition=n % 2) for n in range(20)]
    run = run_engine(records, ["echo"], kafka=RecordingKafkaSink(atomic=True, fenced=(("events", 1),)))
    assert sorted(r.event_id for _, r in run.kafka.results) == sorted(f"evt-{n}" for n in range(0, 20, 2))
    assert {p for p, _ in run.kafka.commits} == {("events", 0)}
    assert len(run.acked) == 20  # acked so that Faust can finish the rebalance; not committed
