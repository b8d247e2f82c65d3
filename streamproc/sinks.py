"""Where results go: Redis (latest result per entity, live feeds, keyed state) and Kafka.

Both sinks are idempotent by event id. In Redis one Lua script per result records the
(event, plugin) pair as published, and only the first time sets the entity's latest
result and appends to the kind's capped stream, so a replayed event leaves Redis as it
was: no second feed entry, no older result over a newer one. Kafka outputs are
at-least-once (a replay may repeat a record; consumers dedupe by ``event_id``). Each
sink writes a whole publication batch at once: one Redis pipeline, and Kafka sends
awaited together, with ``acks=all`` and the idempotent producer.

Redis keys (``<p>`` is ``redis.key_prefix``):
- ``<p>latest:<kind>:<entity key>``: the latest result record (JSON), with a TTL;
- ``<p>feed:<kind>``: a stream of result records (field ``record``), capped;
- ``<p>seen:<plugin>:<event id>``: publication marker, with a TTL;
- ``<p>state:<plugin>:<state key>``: keyed plugin state (see ``streamproc.state``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from streamproc.config import KafkaSettings, RedisSettings
from streamproc.records import DeadLetter, ResultRecord
from streamproc.state import WRITE_IF_NEWER, StateWrite

# KEYS: seen, latest, feed; ARGV: record json, dedupe ttl, result ttl, feed maxlen
PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'record', ARGV[1])
  return 1
end
return 0
"""


def redis_client(settings: RedisSettings) -> Redis:
    """A Redis client for the configured URL (``rediss://`` for TLS; AUTH from settings)."""
    password = settings.password.get_secret_value() if settings.password else None
    kwargs = {"password": password} if password else {}
    return Redis.from_url(settings.url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30, **kwargs)


def kafka_client_options(settings: KafkaSettings) -> dict[str, object]:
    """aiokafka connection options (bootstrap, SASL/SSL) shared by producer and admin."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return options


class RedisSink:
    """Writes result records and state changes to Redis in one pipeline per batch."""

    def __init__(self, redis: Redis, settings: RedisSettings) -> None:
        self.redis = redis
        self.settings = settings
        self._publish = redis.register_script(PUBLISH_ONCE)
        self._write_state = redis.register_script(WRITE_IF_NEWER)

    def latest_key(self, kind: str, key: str) -> str:
        return f"{self.settings.key_prefix}latest:{kind}:{key}"

    def feed_key(self, kind: str) -> str:
        return f"{self.settings.key_prefix}feed:{kind}"

    def seen_key(self, plugin: str, event_id: str) -> str:
        return f"{self.settings.key_prefix}seen:{plugin}:{event_id}"

    async def write(self, results: Sequence[ResultRecord], state_writes: Sequence[StateWrite]) -> None:
        """Apply every write; returns once Redis acknowledged all of them, else raises."""
        if not results and not state_writes:
            return
        s = self.settings
        async with self.redis.pipeline(transaction=False) as pipe:
            for write in state_writes:
                await self._write_state(
                    keys=[write.redis_key],
                    args=[write.state_json, write.mark, write.offset, s.state_ttl_s, write.ids_json],
                    client=pipe,
                )
            for record in results:
                keys = [
                    self.seen_key(record.plugin, record.event_id),
                    self.latest_key(record.kind, record.key),
                    self.feed_key(record.kind),
                ]
                await self._publish(
                    keys=keys, args=[record.to_json(), s.dedupe_ttl_s, s.result_ttl_s, s.feed_maxlen], client=pipe
                )
            await pipe.execute(raise_on_error=True)


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
            **kafka_client_options(self.settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_request_size=16 * 1024 * 1024,
            request_timeout_ms=30_000,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def write(self, results: Sequence[tuple[str, ResultRecord]], dead_letters: Sequence[DeadLetter]) -> None:
        """Send every record; returns once the broker acknowledged all of them, else raises."""
        futures = [
            await self.producer.send(topic, record.to_json(), key=record.key.encode()) for topic, record in results
        ]
        futures += [
            await self.producer.send(self.settings.dead_letter_topic, letter.to_json(), key=letter.source.key)
            for letter in dead_letters
        ]
        if futures:
            await asyncio.gather(*futures)
