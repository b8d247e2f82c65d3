"""Exactly-once output on Kafka: one transaction per publication batch, with its offsets.

With ``kafka.processing_guarantee: exactly_once`` the publisher hands each partition's
publication batch to ``TransactionalKafkaSink``, which writes the batch's results and
dead letters and commits the input offset after the batch (``send_offsets_to_transaction``)
in one Kafka transaction. A reader with ``isolation_level=read_committed`` sees the outputs
of a batch exactly when its offsets are committed: a crash before the commit aborts both,
and the batch is read and processed again by whoever owns the partition next.

Fencing (Kafka's "EOS v1" protocol, which aiokafka speaks): every input partition has its
own transactional producer, with the stable id ``<group>-<topic>-<partition>``. A member
that is given a partition starts that partition's producer, which makes the broker abort
any transaction the previous owner left open and refuse that owner's producer from then on
(``ProducerFenced``). Producers are started when the consumer group assigns their
partitions (again only when one failed or was not ready before the first batch), so a
zombie (a member paused past its session timeout) cannot fence the rightful owner: its
producer is the older one, its late transaction fails and is aborted, and it drops its
unsent batches (``PartitionFenced``); the new owner processes them from the committed
offset. A fenced partition stays fenced on this worker until the group assigns it again.

Redis is not in the transaction: its writes stay idempotent by plugin and event id, so a
batch processed twice leaves Redis as once (``streamproc.engine.sinks``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber, ProducerFenced, TransactionalIdAuthorizationFailed

from streamproc.config import KafkaSettings
from streamproc.engine.sinks import KafkaSink, send_all
from streamproc.errors import PartitionFenced
from streamproc.kafka_clients import aiokafka_options

if TYPE_CHECKING:
    from streamproc.engine.delivery import KafkaMessage

log = logging.getLogger(__name__)

Partition = tuple[str, int]

FATAL_RECORD_ERRORS = (ProducerFenced, OutOfOrderSequenceNumber, TransactionalIdAuthorizationFailed)
"""Errors that stop an aiokafka producer's sender: the producer is unusable afterwards."""


class TransactionalKafkaSink(KafkaSink):
    """Sends each publication batch, and commits its input offset, in one transaction."""

    atomic = True

    def __init__(self, settings: KafkaSettings, group_id: str) -> None:
        super().__init__(settings)
        self.group_id = group_id
        self._producers: dict[Partition, AIOKafkaProducer | None] = {}
        """Assigned partitions and their producers (None: to be started again)."""
        self._fenced: dict[Partition, float] = {}
        """Fenced partitions still assigned here, with when (monotonic seconds)."""
        self._starting: dict[Partition, asyncio.Lock] = {}
        """One start at a time per partition: two producers of one transactional id fence each other."""

    def transactional_id(self, partition: Partition) -> str:
        """The partition's stable transactional id: the same on every member of the group."""
        return f"{self.group_id}-{partition[0]}-{partition[1]}"

    async def start(self) -> None:
        """Nothing to start before partitions are assigned (``assign``)."""

    async def stop(self) -> None:
        await self.revoke(list(self._producers))

    async def assign(self, partitions: Iterable[Partition]) -> None:
        """Start a producer for each newly assigned partition. Starting it fences the
        partition's previous owner and aborts any transaction that owner left open. A
        producer that cannot start now (the broker is down) is started by the next send."""
        new = [p for p in partitions if self._producers.get(p) is None]
        for partition in new:
            self._fenced.pop(partition, None)
        for partition in new:
            self._producers[partition] = None
        results = await asyncio.gather(*(self._partition_producer(p) for p in new), return_exceptions=True)
        for partition, result in zip(new, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("the transactional producer of %s did not start yet: %r", partition, result)

    async def revoke(self, partitions: Iterable[Partition]) -> None:
        """Stop the producers of partitions this member no longer owns."""
        for partition in partitions:
            self._fenced.pop(partition, None)
            await _close(self._producers.pop(partition, None))

    def fenced_for_s(self) -> float:
        """How long the longest-fenced partition still assigned here has been fenced."""
        return time.monotonic() - min(self._fenced.values()) if self._fenced else 0.0

    async def _partition_producer(self, partition: Partition) -> AIOKafkaProducer:
        """The partition's producer, started if it is not running. Callers that overlap (a
        second rebalance, or a batch, while the first start still waits for the broker)
        share one start: a second producer of the same transactional id would fence the
        first, and whichever finished last would be kept, fenced or not. Raises
        ``PartitionFenced`` when the partition was revoked while its producer started."""
        async with self._starting.setdefault(partition, asyncio.Lock()):
            producer = self._producers.get(partition)
            if producer is not None:
                return producer
            producer = await self._start_producer(partition)
            if partition not in self._producers:  # revoked while the broker answered
                await _close(producer)
                raise PartitionFenced(partition, "revoked while its producer started")
            self._producers[partition] = producer
            return producer

    async def _start_producer(self, partition: Partition) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **aiokafka_options(self.settings),
            transactional_id=self.transactional_id(partition),
            transaction_timeout_ms=int(self.settings.transaction_timeout_s * 1000),
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_request_size=self.settings.max_message_bytes,
            request_timeout_ms=30_000,
        )
        try:
            await producer.start()
        except BaseException:
            await _close(producer)
            raise
        return producer

    async def send(
        self, messages: Sequence[KafkaMessage], partition: Partition, next_offset: int
    ) -> list[tuple[KafkaMessage, KafkaError]]:
        """Send every message and commit ``next_offset`` for ``partition`` in one transaction.

        Returns ``[]`` once the transaction committed. If any message failed, the
        transaction is aborted (nothing of it is visible to read_committed readers, the
        offset is not committed) and the failures are returned: the caller resends the whole
        batch. A Kafka error inside the transaction raises after the transaction is
        abandoned (the partition's producer is started again, which aborts it). Raises
        ``PartitionFenced`` when another member owns the partition now, or the group no
        longer assigns it here (a producer started for it would fence its new owner)."""
        if partition in self._fenced:
            raise PartitionFenced(partition, "fenced by another producer")
        if partition not in self._producers:
            raise PartitionFenced(partition, "not assigned to this member")
        producer = await self._partition_producer(partition)
        try:
            await producer.begin_transaction()
            failures = await send_all(producer, messages)
            fatal = _fatal_failure(failures)
            if fatal is not None:
                raise fatal
            if failures:
                await producer.abort_transaction()
                return failures
            await producer.send_offsets_to_transaction({TopicPartition(*partition): next_offset}, self.group_id)
            await producer.commit_transaction()
            return []
        except ProducerFenced as exc:
            _sender_stopped(producer)
            self._fenced.setdefault(partition, time.monotonic())
            raise PartitionFenced(partition, f"fenced by another producer ({exc})") from exc
        except AssertionError as exc:  # aiokafka refuses a transaction step once its sender stopped
            if not _sender_stopped(producer):
                raise
            self._fenced.setdefault(partition, time.monotonic())
            raise PartitionFenced(partition, f"its producer stopped between transaction steps ({exc})") from exc
        except KafkaError:
            if partition in self._producers:  # not revoked meanwhile
                self._producers[partition] = None
            await _close(producer)
            raise


def _fatal_failure(failures: Sequence[tuple[KafkaMessage, KafkaError]]) -> KafkaError | None:
    """The first failure that ended the producer's sender (``FATAL_RECORD_ERRORS``), if any.

    aiokafka's sender stops on such an error and fails every pending record with it; the
    producer can neither abort nor begin a transaction after that (its state is fatal), so
    the batch must not be aborted and resent on it: a fenced producer's partition is fenced
    here, any other fatal error replaces the producer."""
    return next((exc for _, exc in failures if isinstance(exc, FATAL_RECORD_ERRORS)), None)


def _sender_stopped(producer: AIOKafkaProducer) -> bool:
    """Whether the producer's transaction state is fatal (its sender stopped on a fatal
    error), which aiokafka has no public accessor for. The partition is then treated as
    fenced, not given a new producer: a new producer of a member that lost the partition
    would fence its rightful owner. The fatal error aiokafka also sets on its transaction
    waiter is retrieved here: left to the garbage collector it is logged as "never
    retrieved", from whatever code the collector interrupts."""
    manager = getattr(producer, "_txn_manager", None)
    if manager is None or not manager.is_fatal_error():
        return False
    waiter = manager.wait_for_transaction_end()
    if waiter.done() and not waiter.cancelled():
        waiter.exception()
    return True


async def _close(producer: AIOKafkaProducer | None) -> None:
    """Stop a producer; one that is fenced or lost its broker may fail to close cleanly."""
    if producer is None:
        return
    try:
        await producer.stop()
    except KafkaError as exc:
        log.info("closing a transactional producer: %r", exc)
