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
from aiokafka.errors import KafkaError, ProducerFenced

from streamproc.config import KafkaSettings
from streamproc.engine.sinks import KafkaSink, send_all
from streamproc.kafka_clients import aiokafka_options

if TYPE_CHECKING:
    from streamproc.engine.delivery import KafkaMessage

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class PartitionFenced(Exception):
    """This worker may no longer write for the partition: another member owns it now (or
    the partition is not assigned here). Its unsent batches must be dropped uncommitted."""

    def __init__(self, partition: Partition, reason: str) -> None:
        super().__init__(f"{partition[0]}[{partition[1]}]: {reason}")
        self.partition = partition
        self.reason = reason


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
        results = await asyncio.gather(*(self._start_producer(p) for p in new), return_exceptions=True)
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
        self._producers[partition] = producer
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
        ``PartitionFenced`` when another member owns the partition now."""
        if partition in self._fenced:
            raise PartitionFenced(partition, "fenced by another producer")
        producer = self._producers.get(partition) or await self._start_producer(partition)
        try:
            await producer.begin_transaction()
            failures = await send_all(producer, messages)
            if failures:
                await producer.abort_transaction()
                return failures
            await producer.send_offsets_to_transaction({TopicPartition(*partition): next_offset}, self.group_id)
            await producer.commit_transaction()
            return []
        except ProducerFenced as exc:
            self._fenced.setdefault(partition, time.monotonic())
            raise PartitionFenced(partition, f"fenced by another producer ({exc})") from exc
        except KafkaError:
            if partition in self._producers:  # not revoked meanwhile
                self._producers[partition] = None
            await _close(producer)
            raise


async def _close(producer: AIOKafkaProducer | None) -> None:
    """Stop a producer; one that is fenced or lost its broker may fail to close cleanly."""
    if producer is None:
        return
    try:
        await producer.stop()
    except KafkaError as exc:
        log.info("closing a transactional producer: %r", exc)
