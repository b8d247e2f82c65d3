"""Kafka and Redis as the benchmark drives them: producers, the transport limit, result readers.

- ``preproduce``: a backlog of workload events on the input topics (``acks=all``).
- ``transport_limit``: raw consume -> produce of the same messages with no model: an
  aiokafka consumer in a group and an idempotent ``acks=all`` producer, offsets
  committed only after the copies are acknowledged (the worker's promise, minus
  everything else).
- ``paced_produce``: an open-loop generator at a fixed rate. Each event's time is the
  moment the schedule said to send it (not when the generator got round to it), so
  the generator's own lag on a busy machine is not hidden (no coordinated omission).
- ``ResultReader``: reads result records while they are published, from the output
  topics and the Redis feeds, and notes when each was first seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.bench.stats import latency_summary, steady_rate
from streamproc.bench.workload import WorkloadRecord, cycle_stamped, stamp
from streamproc.config import KafkaSettings, Settings
from streamproc.dev.demo_events import DemoRecord
from streamproc.kafka_clients import aiokafka_options, ensure_topics

MAX_REQUEST_BYTES = 16 * 1024 * 1024


def create_topics(kafka: KafkaSettings, names: Sequence[str]) -> None:
    """Create the run's topics up front with the worker's partition count, leaders elected."""
    ensure_topics(kafka, names, wait_for_leaders=True)


def preproduce(settings: Settings, records: Sequence[WorkloadRecord], topic_for_type: Mapping[str, str]) -> float:
    """Send ``records`` (event time: now) and wait for every ack; returns the seconds it took."""
    from streamproc.dev.producer import produce

    now_ms = int(time.time() * 1000)
    stamped = [DemoRecord(r.key, stamp(r, "", now_ms)[0], r.event_id, r.event_type) for r in records]
    started = time.perf_counter()
    produce(settings, stamped, len(stamped), dict(topic_for_type))
    return time.perf_counter() - started


@dataclass
class TransportRun:
    """What the raw consume -> produce loop achieved."""

    events: int
    copied: int
    first_s: float
    last_s: float
    completions: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        steady = steady_rate(self.completions)
        whole = self.copied / (self.last_s - self.first_s) if self.last_s > self.first_s else None
        return {
            "events": self.events,
            "copied": self.copied,
            "events_per_s": round(whole, 1) if whole else None,
            "rate_basis": "first fetch to last ack",
            "steady_events_per_s": round(steady, 1) if steady else None,
            "seconds": round(self.last_s - self.first_s, 3),
        }


async def transport_limit(
    kafka: KafkaSettings, source: str, target: str, group: str, count: int, commit_interval_s: float
) -> TransportRun:
    """Copy ``count`` records from ``source`` to ``target`` as fast as Kafka allows.

    Fetching, sending and acknowledging overlap (the next fetch does not wait for the
    previous sends' acks); offsets are committed only up to acknowledged copies, at
    most every ``commit_interval_s``, as the worker does.
    """
    options = aiokafka_options(kafka)
    consumer = AIOKafkaConsumer(
        source, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **options
    )
    producer = AIOKafkaProducer(
        acks="all", enable_idempotence=True, linger_ms=2, max_request_size=MAX_REQUEST_BYTES, **options
    )
    await consumer.start()
    await producer.start()
    run = TransportRun(count, 0, 0.0, 0.0)
    acked: dict[Any, int] = {}
    in_flight: set[asyncio.Task[None]] = set()
    last_commit = time.time()
    deadline = time.time() + 600

    def copied(_: asyncio.Future[Any]) -> None:
        run.completions.append(time.time())

    async def acknowledge(futures: list[asyncio.Future[Any]], offsets: dict[Any, int]) -> None:
        await asyncio.gather(*futures)
        run.copied += len(futures)
        run.last_s = time.time()
        for tp, offset in offsets.items():
            acked[tp] = max(acked.get(tp, 0), offset)

    consumed = 0
    try:
        while consumed < count and time.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            if batches and not run.first_s:
                run.first_s = time.time()
            futures = []
            offsets = {}
            for tp, messages in batches.items():
                for message in messages:
                    future = await producer.send(target, message.value, key=message.key)
                    future.add_done_callback(copied)
                    futures.append(future)
                offsets[tp] = messages[-1].offset + 1
            consumed += len(futures)
            if futures:
                task = asyncio.get_running_loop().create_task(acknowledge(futures, offsets))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if acked and time.time() - last_commit >= commit_interval_s:
                await consumer.commit(dict(acked))
                last_commit = time.time()
        await asyncio.gather(*in_flight)
        if acked:
            await consumer.commit(dict(acked))
    finally:
        await producer.stop()
        await consumer.stop()
    return run


@dataclass(frozen=True)
class SentEvent:
    """One event the paced generator sent: its id, event time, results expected, send lag."""

    event_id: str
    ts_ms: int
    results: int
    lag_ms: float


async def paced_produce(
    kafka: KafkaSettings,
    records: Sequence[WorkloadRecord],
    topic_for_type: Mapping[str, str],
    rate: float,
    duration_s: float,
    run_label: str,
) -> list[SentEvent]:
    """Send the workload (cycled, ids made unique per pass) at ``rate`` events/s for ``duration_s``."""
    producer = AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_request_size=MAX_REQUEST_BYTES,
        **aiokafka_options(kafka),
    )
    await producer.start()
    default_topic = next(iter(topic_for_type.values()))
    sent: list[SentEvent] = []
    futures = []
    try:
        start_wall = time.time()
        total = max(1, int(rate * duration_s))
        for i, (record, prefix) in enumerate(cycle_stamped(list(records), run_label)):
            if i >= total:
                break
            due = start_wall + i / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ts_ms = int(due * 1000)
            value, event_id = stamp(record, prefix, ts_ms)
            topic = topic_for_type.get(record.event_type, default_topic)
            futures.append(await producer.send(topic, value, key=record.key))
            sent.append(SentEvent(event_id, ts_ms, record.results, max(0.0, (time.time() - due) * 1000)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


class ResultReader:
    """Result records as they appear on the output topics (and in the Redis feeds).

    For each result (event id, plugin) it keeps the record's ``event_ts`` and
    ``result_ts`` and the wall time it was first seen on Kafka and in Redis. A result is
    *acknowledged* once seen in both (the worker acks an input only after both sinks
    acknowledged its results; seeing them is the reader's proof, a few ms later).
    """

    def __init__(self, kafka: KafkaSettings, topics: Sequence[str], redis_url: str | None, feeds: Sequence[str]):
        self.kafka = kafka
        self.topics = list(topics)
        self.redis_url = redis_url
        self.feeds = list(feeds)
        self.kafka_seen: dict[tuple[str, str], float] = {}
        self.redis_seen: dict[tuple[str, str], float] = {}
        self.times: dict[tuple[str, str], tuple[int, int]] = {}
        self._plugins: dict[str, set[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._redis: Any = None

    async def start(self, from_end: bool = False) -> ResultReader:
        """Start reading; ``from_end``: only results published from now on."""
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            **aiokafka_options(self.kafka),
        )
        await self._consumer.start()
        try:
            partitions = await self._assigned()
            if from_end:
                await self._consumer.seek_to_end(*partitions)
                for tp in partitions:
                    await self._consumer.position(tp)  # resolve now, before anything new is published
        except BaseException:
            await self.stop()
            raise
        cursors = dict.fromkeys(self.feeds, "0-0")
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._read_kafka()))
        if self.redis_url and self.feeds:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(self.redis_url)
            if from_end:
                for feed in self.feeds:
                    last = await self._redis.xrevrange(feed, count=1)
                    cursors[feed] = last[0][0].decode() if last else "0-0"
            self._tasks.append(loop.create_task(self._read_redis(cursors)))
        return self

    async def _assigned(self, timeout_s: float = 30.0) -> list[TopicPartition]:
        """Every partition of the output topics (a consumer with no group is given them all)."""
        assert self._consumer is not None
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            assigned = self._consumer.assignment()
            if {tp.topic for tp in assigned} >= set(self.topics):
                return sorted(assigned)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"no partitions of {self.topics} assigned within {timeout_s:.0f} s")

    async def stop(self) -> None:
        """Stop reading (idempotent); what was seen stays available."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    async def _read_kafka(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.time()
            for messages in batches.values():
                for message in messages:
                    self._note(message.value, now, self.kafka_seen)

    async def _read_redis(self, cursors: dict[str, str]) -> None:
        while True:
            answer = await self._redis.xread(cursors, count=1000, block=200)
            now = time.time()
            for stream, entries in answer or []:
                for entry_id, fields in entries:
                    cursors[stream.decode()] = entry_id.decode()
                    self._note(fields[b"record"], now, self.redis_seen)

    def _note(self, raw: bytes, now: float, seen: dict[tuple[str, str], float]) -> None:
        try:
            doc = json.loads(raw)
            key = (str(doc["event_id"]), str(doc["plugin"]))
        except (ValueError, KeyError, TypeError):
            return
        seen.setdefault(key, now)
        self.times.setdefault(key, (int(doc.get("event_ts", 0)), int(doc.get("result_ts", 0))))
        self._plugins.setdefault(key[0], set()).add(key[1])

    def seen_at(self, key: tuple[str, str]) -> float | None:
        """When a result was seen on Kafka and, if the feeds are read, in Redis (the later)."""
        kafka = self.kafka_seen.get(key)
        if not self.feeds or not self.redis_url:
            return kafka
        redis = self.redis_seen.get(key)
        return max(kafka, redis) if kafka is not None and redis is not None else None

    def completions(self, expected: Mapping[str, int]) -> dict[str, float]:
        """Event id -> when its last expected result was seen, for events with every result seen.

        Events expected to yield no result (0) are never complete: leave them out.
        """
        out = {}
        for event_id, plugins in self._plugins.items():
            wanted = expected.get(event_id, 0)
            if wanted <= 0 or len(plugins) < wanted:
                continue
            times = [self.seen_at((event_id, p)) for p in plugins]
            if all(t is not None for t in times):
                out[event_id] = max(t for t in times if t is not None)
        return out

    def result_count(self, event_ids: set[str] | None = None) -> int:
        return sum(1 for key in self.kafka_seen if event_ids is None or key[0] in event_ids)

    async def wait_for(self, expected: Mapping[str, int], timeout_s: float, stall_s: float = 30.0) -> bool:
        """Until every expected event is complete, ``timeout_s`` passes or nothing arrives for ``stall_s``."""
        targets = {k: v for k, v in expected.items() if v > 0}
        deadline = time.time() + timeout_s
        last_count, last_change = -1, time.time()
        while time.time() < deadline:
            count = len(self.completions(targets))
            if count >= len(targets):
                return True
            if count != last_count:
                last_count, last_change = count, time.time()
            elif time.time() - last_change > stall_s:
                return False
            await asyncio.sleep(0.2)
        return False

    def latency(self, sent: Sequence[SentEvent], since_ms: int = 0) -> dict[str, Any]:
        """Latencies of the sent events (after ``since_ms``), in milliseconds.

        ``acknowledged``: last result seen in both sinks minus event time (the figure the
        targets use); ``result_ts``: the worker's result time minus event time (excludes
        publication); ``send_lag``: how late the generator sent (part of ``acknowledged``).
        """
        measured = [s for s in sent if s.ts_ms >= since_ms and s.results > 0]
        done = self.completions({s.event_id: s.results for s in measured})
        acked: list[float] = []
        computed: list[float] = []
        for s in measured:
            if s.event_id in done:
                acked.append(done[s.event_id] * 1000 - s.ts_ms)
                computed.append(max(self.times[(s.event_id, p)][1] for p in self._plugins[s.event_id]) - s.ts_ms)
        return {
            "measured_events": len(measured),
            "completed_events": len(done),
            "acknowledged": latency_summary(acked),
            "result_ts": latency_summary(computed),
            "send_lag": latency_summary([s.lag_ms for s in measured]),
            "samples_ms": sorted(round(x, 1) for x in acked),
        }
