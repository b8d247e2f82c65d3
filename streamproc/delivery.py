"""The delivery promise, in one place: when an input offset becomes safe to commit.

At-least-once, per-partition order, idempotent outputs. For every consumed record:

1. The engine enqueues it on its partition's queue, in offset order, with the work that
   produces its publication (results, dead letters, state writes).
2. The partition's publisher waits for the head of the queue to finish, then takes every
   record behind it that has finished too (one publication batch, still in order).
3. It writes the batch to Redis (one pipeline: state writes, then results, each
   idempotent) and to Kafka (results to output topics, dead letters to the DLQ,
   ``acks=all``), and waits until both acknowledged everything. A sink that fails is
   retried, the other is not rewritten, until it succeeds or the worker stops; nothing
   is skipped, so a record is never acknowledged before its outputs.
4. Only then it acks the batch's records, in offset order. Faust commits the highest
   offset below which every record is acked, so an offset is committed only after all
   results of its record and of everything before it in the partition are acknowledged.

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

from streamproc.records import DeadLetter, ResultRecord, SourceRecord
from streamproc.sinks import KafkaSink, RedisSink
from streamproc.state import StateWrite

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


PublishedHook = Callable[[PendingRecord, Publication], None]
WriteHook = Callable[[float], None]
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
        on_published: PublishedHook,
        on_failure: FailureHook,
        on_written: WriteHook,
    ) -> None:
        self.redis_sink = redis_sink
        self.kafka_sink = kafka_sink
        self.retry_s = retry_s
        self._on_published = on_published
        self._on_failure = on_failure
        self._on_written = on_written
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._unacked = 0
        self._idle = asyncio.Event()
        self._idle.set()

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
            batch = [queue.records.popleft()]
            while queue.records and queue.records[0].work.done() and len(batch) < MAX_PUBLICATION_BATCH:
                batch.append(queue.records.popleft())
            publications = [self._publication(r) for r in batch]
            started = time.perf_counter()
            await self._write(publications)  # step 3
            self._on_written(time.perf_counter() - started)
            for record, publication in zip(batch, publications, strict=True):
                record.ack()  # step 4
                self._on_published(record, publication)
            self._unacked -= len(batch)
            if self._unacked == 0:
                self._idle.set()

    @staticmethod
    def _publication(record: PendingRecord) -> Publication:
        error = record.work.exception()
        if error is None:
            return record.work.result()
        # The engine's work never raises; if it does, the record must not vanish silently.
        log.error("work for %s failed: %r", record.source.position, error)
        return Publication(dead_letters=[DeadLetter(record.source, "engine", f"{type(error).__name__}: {error}")])

    async def _write(self, publications: list[Publication]) -> None:
        results = [r for p in publications for r in p.results]
        redis_pending = bool(results) or any(p.state_writes for p in publications)
        kafka_pending = bool(results) or any(p.dead_letters for p in publications)
        while redis_pending or kafka_pending:
            outcome = await asyncio.gather(
                self._redis(publications) if redis_pending else _nothing(),
                self._kafka(publications) if kafka_pending else _nothing(),
                return_exceptions=True,
            )
            for sink, error in zip(("redis", "kafka"), outcome, strict=True):
                if isinstance(error, BaseException):
                    if isinstance(error, asyncio.CancelledError):
                        raise error
                    self._on_failure(sink, error)
            redis_pending = redis_pending and isinstance(outcome[0], BaseException)
            kafka_pending = kafka_pending and isinstance(outcome[1], BaseException)
            if redis_pending or kafka_pending:
                await asyncio.sleep(self.retry_s)

    async def _redis(self, publications: list[Publication]) -> None:
        await self.redis_sink.write(
            [r for p in publications for _, r in p.results], [w for p in publications for w in p.state_writes]
        )

    async def _kafka(self, publications: list[Publication]) -> None:
        await self.kafka_sink.write(
            [r for p in publications for r in p.results], [d for p in publications for d in p.dead_letters]
        )


async def _nothing() -> None:
    return None
