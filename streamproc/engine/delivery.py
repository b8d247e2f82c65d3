"""The delivery promise, in one place: when an input offset becomes safe to commit.

At-least-once, per-partition order, idempotent outputs. For every consumed record:

1. The engine enqueues it on its partition's queue, in offset order, with the work that
   produces its publication (results, dead letters, state writes).
2. The partition's publisher waits for the head of the queue to finish, then takes every
   record behind it that has finished too (one publication batch, still in order).
3. It writes the batch to Redis (one pipeline: state writes, then results, each
   idempotent by plugin and event id; a result whose event id another input already
   used is turned into an ``identity`` dead letter), then to Kafka (results to output
   topics, dead letters to the DLQ, ``acks=all``), and waits until both acknowledged
   everything. A sink that fails is retried, what was acknowledged is not rewritten,
   until it succeeds or the worker stops; nothing is skipped, so a record is never
   acknowledged before its outputs. Kafka's permanent refusals become dead letters.
4. Only then it acks the batch's records, in offset order. Faust commits the highest
   offset below which every record is acked, so an offset is committed only after all
   results of its record and of everything before it in the partition are acknowledged.
5. It releases each acked record (flow control, not bookkeeping): the record's in-flight
   slot is freed, so ``accept`` may take another record (backpressure), and its state
   writes are marked written, so the state cache may evict their keys. Metrics observe
   the record after that, and a failing metrics hook cannot stop publishing.

A record stays at the head of its queue until it is acked: an unexpected error while
publishing is logged, counted and retried after ``retry_s`` (every write is idempotent),
so a record is never dropped from its queue unacked, which would stall its partition's
commits for ever.

Results of one key are therefore published in input order (a key maps to one partition).
On a rebalance and on SIGTERM the engine drains these queues before Faust commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)

from streamproc.engine.sinks import KafkaSink, RedisSink
from streamproc.engine.state import StateWrite
from streamproc.errors import PartitionFenced
from streamproc.records import DeadLetter, ResultRecord, SourceRecord

log = logging.getLogger(__name__)

MAX_PUBLICATION_BATCH = 512


@dataclass
class Publication:
    """Everything one input record leads to, written together before its offset is acked."""

    results: list[tuple[str, ResultRecord]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    state_writes: list[StateWrite] = field(default_factory=list)


@dataclass
class PendingRecord:
    """A consumed record waiting for its work to finish and its outputs to be acknowledged."""

    source: SourceRecord
    work: asyncio.Future[Publication]
    ack: Callable[[], object]


@dataclass(frozen=True)
class KafkaMessage:
    """One record for Kafka: a result (``result``: its topic and record) or a dead letter
    (``letter``), with the input record and publication it belongs to."""

    topic: str
    value: bytes
    key: bytes | None
    source: SourceRecord
    publication: Publication
    result: tuple[str, ResultRecord] | None = None
    letter: DeadLetter | None = None
    letter_stripped: bool = False
    """A dead letter already sent without its original bytes."""


PERMANENT_KAFKA_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    CorruptRecordException,
)
"""Errors Kafka will answer the same message with every time: retrying would stall the partition."""


def is_permanent(error: BaseException) -> bool:
    """Whether Kafka refuses this message for good (see ``PERMANENT_KAFKA_ERRORS``)."""
    return isinstance(error, PERMANENT_KAFKA_ERRORS)


PublishedHook = Callable[[PendingRecord, Publication], None]
"""Called once per acked record: ``release`` (step 5, flow control), then the metrics observer."""
WriteHook = Callable[[float], None]
FencedHook = Callable[[tuple[str, int]], None]
FailureHook = Callable[[str, BaseException], None]


class _PartitionQueue:
    def __init__(self) -> None:
        self.records: deque[PendingRecord] = deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class OrderedPublisher:
    """Publishes and acks each partition's records in offset order (steps 2-4 above)."""

    def __init__(
        self,
        redis_sink: RedisSink,
        kafka_sink: KafkaSink,
        retry_s: float,
        release: PublishedHook,
        on_published: PublishedHook,
        on_failure: FailureHook,
        on_written: WriteHook,
        on_fenced: FencedHook,
    ) -> None:
        """``release`` frees what an acked record held (step 5); ``on_fenced`` forgets what
        a partition's dropped records changed in memory (``_drop_fenced``); ``on_published``,
        ``on_failure`` (a sink or the publisher failed; retrying) and ``on_written`` (seconds
        a batch took to write) only observe."""
        self.redis_sink = redis_sink
        self.kafka_sink = kafka_sink
        self.retry_s = retry_s
        self._release = release
        self._on_published = on_published
        self._on_failure = on_failure
        self._on_written = on_written
        self._on_fenced = on_fenced
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._unacked = 0
        self._last_progress = time.monotonic()
        self._idle = asyncio.Event()
        self._idle.set()

    def stalled_s(self) -> float:
        """Seconds since a record was last acked while records are pending (0 when none is):
        a stuck sink or a partition that cannot commit shows here, for the liveness probe."""
        return time.monotonic() - self._last_progress if self._unacked else 0.0

    @property
    def pending(self) -> int:
        """Records enqueued and not yet acked."""
        return self._unacked

    def enqueue(self, record: PendingRecord) -> None:
        """Step 1: queue a record behind the earlier records of its partition."""
        tp = (record.source.topic, record.source.partition)
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = _PartitionQueue()
        if queue.task is None or queue.task.done():
            queue.task = asyncio.get_running_loop().create_task(self._run(queue), name=f"publish-{tp}")
        queue.records.append(record)
        queue.wakeup.set()
        if self._unacked == 0:
            self._last_progress = time.monotonic()
        self._unacked += 1
        self._idle.clear()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued record is published and acked; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        """Stop publishing; records not yet acked stay uncommitted and will be redelivered."""
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, queue: _PartitionQueue) -> None:
        while True:
            if not queue.records:
                queue.wakeup.clear()
                await queue.wakeup.wait()
                continue
            await asyncio.wait([queue.records[0].work])  # step 2: the head, in order
            try:
                await self._publish_head(queue)
            except asyncio.CancelledError:
                raise
            except PartitionFenced as exc:
                self._drop_fenced(queue, exc)
            except Exception as exc:  # a bug must neither drop the records nor stop the partition
                log.exception(
                    "publishing from %s failed; retrying in %.1f s", queue.records[0].source.position, self.retry_s
                )
                self._on_failure("publisher", exc)
                await asyncio.sleep(self.retry_s)

    async def _publish_head(self, queue: _PartitionQueue) -> None:
        batch: list[PendingRecord] = []
        for record in queue.records:
            if not record.work.done() or len(batch) == MAX_PUBLICATION_BATCH:
                break
            batch.append(record)
        publications = [self._publication(r) for r in batch]
        started = time.perf_counter()
        await self._write(batch, publications)  # step 3
        self._on_written(time.perf_counter() - started)
        for record, publication in zip(batch, publications, strict=True):
            record.ack()  # step 4
            queue.records.popleft()
            self._unacked -= 1
            self._last_progress = time.monotonic()
            self._release(record, publication)  # step 5
            try:
                self._on_published(record, publication)
            except Exception:  # metrics only: never worth stopping the partition for
                log.exception("observing the publication of %s failed", record.source.position)
        if self._unacked == 0:
            self._idle.set()

    def _drop_fenced(self, queue: _PartitionQueue, fenced: PartitionFenced) -> None:
        """Another member owns the partition now: nothing of its queued records was
        committed, and the new owner processes them again from the committed offset. They
        are acked, so that Faust can finish the rebalance, and released; no commit follows
        (under exactly_once Faust commits nothing itself; under at_least_once the broker
        refuses commits of a member the group no longer counts)."""
        log.warning("dropping %d uncommitted records of %s", len(queue.records), fenced)
        self._on_failure(fenced.sink, fenced)
        self._on_fenced(fenced.partition)
        while queue.records:
            record = queue.records.popleft()
            record.ack()
            self._unacked -= 1
            self._release(record, Publication())
            self._on_published(record, Publication())  # acked, nothing published
        self._last_progress = time.monotonic()
        if self._unacked == 0:
            self._idle.set()

    @staticmethod
    def _publication(record: PendingRecord) -> Publication:
        error = asyncio.CancelledError() if record.work.cancelled() else record.work.exception()
        if error is None:
            return record.work.result()
        # The engine's work never raises; if it does, the record must not vanish silently.
        log.error("work for %s failed: %r", record.source.position, error)
        return Publication(dead_letters=[DeadLetter(record.source, "engine", f"{type(error).__name__}: {error}")])

    async def _write(self, records: list[PendingRecord], publications: list[Publication]) -> None:
        """Step 3: Redis, then Kafka, each retried until it acknowledged everything. Redis
        goes first because it decides identity: a result whose event id another input
        already used is not sent to Kafka but dead-lettered (stage ``identity``)."""
        await self._write_redis(records, publications)
        await self._write_kafka(records, publications)

    async def _write_redis(self, records: list[PendingRecord], publications: list[Publication]) -> None:
        results = [r for p in publications for _, r in p.results]
        writes = [w for p in publications for w in p.state_writes]
        if not results and not writes:
            return
        while True:
            try:
                refused = await self.redis_sink.write(results, writes)
                break
            except PartitionFenced:
                raise
            except Exception as exc:  # down, read-only, timing out: all transient for Redis
                self._on_failure("redis", exc)
                await asyncio.sleep(self.retry_s)
        refused_ids = {id(r) for r in refused}
        for pending, publication in zip(records, publications, strict=True):
            for entry in [e for e in publication.results if id(e[1]) in refused_ids]:
                result = entry[1]
                log.warning("event id %s of %s reused by another input: dead-lettered", result.event_id, result.plugin)
                publication.results.remove(entry)
                publication.dead_letters.append(
                    DeadLetter(
                        pending.source,
                        "identity",
                        f"event id {result.event_id!r} was already published by {result.plugin} for another input; "
                        "event ids must be unique",
                        plugin=result.plugin,
                        event_id=result.event_id,
                    )
                )

    async def _write_kafka(self, records: list[PendingRecord], publications: list[Publication]) -> None:
        """Send every result and dead letter, with the batch's input offset (committed with
        them under ``exactly_once``); retry what failed. A message Kafka refuses for good
        (too large for the topic, a topic it may not write) must not stall the partition: a
        refused result becomes a ``sink`` dead letter of its event, a refused dead letter is
        sent again without its original bytes (size and SHA-256 kept). Only a dead letter
        refused even so is retried for ever (the DLQ itself is unusable: the commit-stall
        check reports it). A transactional sink aborts the whole batch when one message
        fails, so the whole batch is sent again; otherwise only the failed messages are.
        Raises ``PartitionFenced`` when this worker may no longer write for the partition."""
        pairs = list(zip(records, publications, strict=True))
        messages = [
            KafkaMessage(topic, result.to_json(), result.key.encode(), pending.source, publication, (topic, result))
            for pending, publication in pairs
            for topic, result in publication.results
        ]
        messages += [
            self._letter_message(letter, publication) for _, publication in pairs for letter in publication.dead_letters
        ]
        last = records[-1].source
        partition, next_offset = (last.topic, last.partition), last.offset + 1
        while True:
            try:
                failures = await self.kafka_sink.send(messages, partition, next_offset)
            except PartitionFenced:
                raise
            except Exception as exc:  # the producer itself failed (not connected, closed)
                self._on_failure("kafka", exc)
                await asyncio.sleep(self.retry_s)
                continue
            if not failures:
                return
            self._on_failure("kafka", failures[0][1])
            again = {id(message): self._next_attempt(message, error) for message, error in failures}
            if self.kafka_sink.atomic:
                messages = [again.get(id(message), message) for message in messages]
            else:
                messages = list(again.values())
            if any(again[id(message)] is message for message, _ in failures):  # the same again: wait first
                await asyncio.sleep(self.retry_s)

    def _next_attempt(self, message: KafkaMessage, error: BaseException) -> KafkaMessage:
        """What to send after Kafka refused ``message``: the same message after a transient
        error; for a permanent refusal, a ``sink`` dead letter instead of a result, or the
        dead letter without its original bytes."""
        if not is_permanent(error) or (message.letter is not None and message.letter_stripped):
            return message
        if message.result is not None:
            return self._refused_result(message, error)
        assert message.letter is not None
        log.warning(
            "kafka refused the dead letter of %s (%r); sending it without its original",
            message.letter.source.position,
            error,
        )
        return self._letter_message(message.letter, message.publication, max_original_bytes=0)

    def _letter_message(
        self, letter: DeadLetter, publication: Publication, max_original_bytes: int | None = None
    ) -> KafkaMessage:
        limit = self.kafka_sink.max_original_bytes if max_original_bytes is None else max_original_bytes
        return KafkaMessage(
            self.kafka_sink.dead_letter_topic,
            letter.to_json(limit),
            letter.source.key,
            letter.source,
            publication,
            letter=letter,
            letter_stripped=limit == 0,
        )

    def _refused_result(self, message: KafkaMessage, error: BaseException) -> KafkaMessage:
        assert message.result is not None
        topic, record = message.result
        log.warning(
            "kafka refused the %s result of %s for %s (%r): dead-lettered", record.plugin, record.event_id, topic, error
        )
        letter = DeadLetter(
            message.source,
            "sink",
            f"kafka refused the result for {topic}: {type(error).__name__}: {error}",
            plugin=record.plugin,
            event_id=record.event_id,
        )
        message.publication.results.remove(message.result)
        message.publication.dead_letters.append(letter)
        return self._letter_message(letter, message.publication)
