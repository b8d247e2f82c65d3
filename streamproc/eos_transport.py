"""Faust's Kafka transport under ``processing_guarantee: exactly_once``.

The engine commits input offsets inside its own Kafka transactions, one per publication
batch (``streamproc.engine.transactions``). Faust's exactly-once mode cannot be used for
that: its transactions follow Faust's commit interval, not the engine's batches, and it
produces through its own producers. Two changes to Faust's consumer are needed instead:

- inputs are read ``read_committed`` (Faust reads ``read_committed`` only in its own
  exactly-once mode), so an upstream transactional producer's aborted records are never
  processed;
- Faust commits no offsets itself: an offset commit of Faust's landing after a later
  transaction's commit would move the group's offset back, and the records in between
  would be processed, and published, twice.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class _ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        # Faust picks read_committed when its consumer is "in a transaction"; only for this call.
        own = self.consumer.in_transaction
        self.consumer.in_transaction = True
        try:
            return super()._create_worker_consumer(transport)
        finally:
            self.consumer.in_transaction = own


class _EngineCommitsConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Commit nothing: the engine's transactions commit the offsets."""
        return False


class EngineCommitsTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport reading ``read_committed`` and leaving offset commits
    to the engine's transactions."""

    Consumer = _EngineCommitsConsumer
