"""Where results go: Redis (latest result per entity, live feeds, keyed state) and Kafka.

Both sinks are idempotent by event id. In Redis one Lua script per result records the
(event, plugin) pair as published, and only the first time sets the entity's latest
result and appends to the kind's capped stream, so a replayed event leaves Redis as it
was: no second feed entry, no older result over a newer one. Kafka outputs are
at-least-once (a replay may repeat a record; consumers dedupe by ``event_id``). Each
sink writes a whole publication batch at once: one Redis pipeline, and Kafka sends
awaited together, with ``acks=all`` and the idempotent producer.

The Redis key layout is ``streamproc.engine.keys.RedisKeys``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from streamproc.config import KafkaSettings, RedisSettings
from streamproc.engine.keys import FEED_FIELD, RedisKeys
from streamproc.engine.state import STATE_FENCED, WRITE_IF_NEWER, StateWrite
from streamproc.errors import PartitionFenced
from streamproc.kafka_clients import aiokafka_options
from streamproc.records import ResultRecord

if TYPE_CHECKING:
    from streamproc.engine.delivery import KafkaMessage

DEAD_LETTER_HEADROOM_BYTES = 64 * 1024

# KEYS: seen, latest, feed; ARGV: record json, dedupe ttl, result ttl, feed maxlen, feed field, input digest.
# Returns 1: published; 0: this input was published already (a replay); -1: another input
# was published under the same plugin and event id (the id is not unique).
PUBLISH_ONCE = """
local seen = redis.call('GET', KEYS[1])
if not seen then
  redis.call('SET', KEYS[1], ARGV[6], 'EX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', ARGV[5], ARGV[1])
  return 1
end
if seen == ARGV[6] or seen == '1' then return 0 end
return -1
"""
ID_COLLISION = -1


class RedisSink:
    """Writes result records and state changes to Redis in one pipeline per batch.

    One round trip per batch: the Lua scripts are loaded once (``SCRIPT LOAD``) and called
    by their SHA (``EVALSHA``); they are loaded again only when Redis answers that it lost
    them (a restart, ``SCRIPT FLUSH``). Of several state writes of one key (and source
    partition) in a batch only the newest is sent: it holds the effect of the earlier ones."""

    def __init__(self, redis: Redis, settings: RedisSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = RedisKeys(settings.key_prefix)
        self._sources = {"publish": PUBLISH_ONCE, "state": WRITE_IF_NEWER}
        self._shas: dict[str, str] = {}

    async def write(self, results: Sequence[ResultRecord], state_writes: Sequence[StateWrite]) -> list[ResultRecord]:
        """Apply every write; returns once Redis acknowledged all of them, else raises.

        Returns the results Redis refused because another input was already published
        under the same plugin and event id (a replay of the same input is not refused).
        Raises ``PartitionFenced`` when a state write was refused because another member
        claimed its partition (the batch's results are idempotent; it is dropped)."""
        if not results and not state_writes:
            return []
        newest = list({(w.redis_key, w.mark): w for w in state_writes}.values())  # given in applied order
        if not self._shas:
            await self._load_scripts()
        try:
            answers = await self._execute(results, newest)
        except NoScriptError:
            await self._load_scripts()
            answers = await self._execute(results, newest)  # every script call is idempotent
        fenced = next((w for w, answer in zip(newest, answers, strict=False) if answer == STATE_FENCED), None)
        if fenced is not None:
            reason = f"its state was claimed by a newer member (epoch {fenced.epoch} is stale)"
            raise PartitionFenced(fenced.partition, reason, "redis")
        published = answers[len(newest) :]
        return [r for r, answer in zip(results, published, strict=True) if answer == ID_COLLISION]

    async def _load_scripts(self) -> None:
        self._shas = {name: await self.redis.script_load(source) for name, source in self._sources.items()}

    async def _execute(self, results: Sequence[ResultRecord], state_writes: Sequence[StateWrite]) -> list[object]:
        s = self.settings
        async with self.redis.pipeline(transaction=False) as pipe:
            for write in state_writes:
                pipe.evalsha(
                    self._shas["state"],
                    2,
                    write.redis_key,
                    write.owner_key,
                    write.state_json,
                    write.mark,
                    write.offset,
                    s.state_ttl_s,
                    write.ids_json,
                    write.epoch,
                )
            for record in results:
                pipe.evalsha(
                    self._shas["publish"],
                    3,
                    self.keys.seen(record.plugin, record.event_id),
                    self.keys.latest(record.kind, record.key),
                    self.keys.feed(record.kind),
                    record.to_json(),
                    s.dedupe_ttl_s,
                    s.result_ttl_s,
                    s.feed_maxlen,
                    FEED_FIELD,
                    record.input_digest,
                )
            return await pipe.execute(raise_on_error=True)


class KafkaSink:
    """Sends result records to their output topics and dead letters to the DLQ topic."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaSink used before start()")
        return self._producer

    async def start(self) -> None:
        """Create and start the producer (aiokafka needs the running loop for that)."""
        self._producer = AIOKafkaProducer(
            **aiokafka_options(self.settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_request_size=self.settings.max_message_bytes,
            request_timeout_ms=30_000,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def dead_letter_topic(self) -> str:
        return self.settings.dead_letter_topic

    @property
    def max_original_bytes(self) -> int:
        """The largest original that fits whole in a dead letter on this cluster: base64
        makes it 4/3 larger, and the letter's other fields need room too."""
        return max(0, (self.settings.max_message_bytes - DEAD_LETTER_HEADROOM_BYTES) * 3 // 4)

    atomic = False
    """Whether a failed send leaves nothing of the batch visible (a transaction), so the
    whole batch is sent again; else only the failed messages are."""

    async def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Input partitions assigned to this worker: one producer serves them all here."""

    async def revoke(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Input partitions taken from this worker: nothing to do with one shared producer."""

    def fenced_for_s(self) -> float:
        """How long a partition still assigned here has been fenced: never, at least once."""
        return 0.0

    async def send(
        self, messages: Sequence[KafkaMessage], partition: tuple[str, int], next_offset: int
    ) -> list[tuple[KafkaMessage, KafkaError]]:
        """Send the publication batch of input ``partition`` and wait for every
        acknowledgement (``acks=all``). Returns the messages Kafka did not take, each with its
        error (empty: all acknowledged); raises only when the producer itself fails. At least
        once, the input offset (``next_offset``) is not committed here: Faust commits it
        after the batch's records are acked."""
        return await send_all(self.producer, messages)


async def send_all(
    producer: AIOKafkaProducer, messages: Sequence[KafkaMessage]
) -> list[tuple[KafkaMessage, KafkaError]]:
    """Send every message, then await every acknowledgement; returns the failed ones."""
    failures: list[tuple[KafkaMessage, KafkaError]] = []
    sent = []
    for message in messages:
        try:
            sent.append((message, await producer.send(message.topic, message.value, key=message.key)))
        except KafkaError as exc:  # refused before sending: too large, unknown topic name
            failures.append((message, exc))
    for message, future in sent:
        try:
            await future
        except KafkaError as exc:
            failures.append((message, exc))
    return failures
