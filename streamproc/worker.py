"""The Faust worker: plugins loaded, topics ensured, one agent feeding the engine.

Faust (faust-streaming on aiokafka) owns the consumer group, partition assignment,
fetching, flow control and offset commits; the engine owns everything between a record
and its acknowledgement. The agent reads with ``noack()``: a record is acked by the
ordered publisher only after its outputs are acknowledged, and Faust commits only
contiguous acked offsets. On a rebalance and on SIGTERM, Faust waits until every record
it delivered is acked (``stream_wait_empty``), then commits; a watchdog bounds SIGTERM
to ``shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import faust
import torch
from aiokafka.admin import AIOKafkaAdminClient

from streamproc.config import Settings
from streamproc.engine.engine import Engine
from streamproc.engine.keys import RedisKeys
from streamproc.engine.runtime import PluginRuntime
from streamproc.engine.sinks import KafkaSink, RedisSink
from streamproc.engine.state import KeyedStateStore
from streamproc.engine.transactions import TransactionalKafkaSink
from streamproc.eos_transport import EngineCommitsTransport
from streamproc.kafka_clients import aiokafka_options, ensure_topics, faust_credentials
from streamproc.ops.health import HealthServer
from streamproc.ops.metrics import Metrics
from streamproc.records import SourceRecord
from streamproc.redis_clients import async_redis
from streamproc.registry import build_router

log = logging.getLogger(__name__)

GAUGE_INTERVAL_S = 5.0
PROGRESS_LOG_INTERVAL_S = 30.0


class StreamprocWorker:
    """Everything one worker process runs: the Faust app, the engine and the probes."""

    def __init__(self, settings: Settings, runtimes: dict[str, PluginRuntime], load_failures: int = 0) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.metrics.plugin_load_failures.set(load_failures)
        self.runtimes = runtimes
        self.router = build_router(settings, runtimes)
        redis = async_redis(settings.redis)
        self.group_id = settings.kafka.consumer_group or settings.app_id
        self.exactly_once = settings.kafka.processing_guarantee == "exactly_once"
        self.engine = Engine(
            settings,
            runtimes,
            self.router,
            RedisSink(redis, settings.redis),
            TransactionalKafkaSink(settings.kafka, self.group_id) if self.exactly_once else KafkaSink(settings.kafka),
            KeyedStateStore(
                redis,
                RedisKeys(settings.redis.key_prefix),
                self.group_id,
                settings.redis.state_ttl_s,
                cache_size=settings.redis.state_cache_entries,
                retry_s=settings.publish_retry_s,
                recent_ids=settings.redis.state_recent_ids,
            ),
            self.metrics,
        )
        self.redis = redis
        self.health = HealthServer(
            self.metrics, settings.http.bind, settings.http.port, self._ready, self._live, settings=settings
        )
        self.app = self._build_app()
        self._engine_started = asyncio.Event()
        self._assigned = False
        self._lag_total = 0
        self._admin: AIOKafkaAdminClient | None = None

    def topics(self) -> list[str]:
        """Every topic the worker reads or writes."""
        k = self.settings.kafka
        outputs = [self.router.output_topic(name) for name in self.runtimes]
        return sorted({*k.input_topics.values(), *outputs, k.dead_letter_topic})

    def _build_app(self) -> faust.App:
        k = self.settings.kafka
        app = faust.App(
            self.group_id,  # Faust's app id is the group id
            broker=[f"kafka://{b}" for b in k.bootstrap.split(",")],
            broker_credentials=faust_credentials(k),
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=k.partitions,
            topic_replication_factor=k.replication_factor,
            consumer_auto_offset_reset=k.auto_offset_reset,
            broker_commit_interval=k.commit_interval_s,
            broker_session_timeout=k.session_timeout_s,
            consumer_group_instance_id=k.group_instance_id,
            stream_buffer_maxsize=k.stream_buffer_maxsize,
            stream_wait_empty=True,
            web_enabled=False,
            producer_acks=-1,
            store="memory://",
            datadir=Path(tempfile.gettempdir()) / f"streamproc-{k.consumer_group or self.settings.app_id}",
        )
        if self.exactly_once:  # before anything creates Faust's default transport
            app.transport = EngineCommitsTransport(app.conf.broker_consumer, app)
        topic = app.topic(*sorted(set(k.input_topics.values())), key_type=bytes, value_type=bytes)
        engine = self.engine

        @app.agent(topic, name="router")
        async def route(stream: faust.StreamT) -> None:
            await self._engine_started.wait()
            async for event in stream.noack().events():
                msg = event.message
                source = SourceRecord(
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    msg.key,
                    msg.value,
                    int(msg.timestamp * 1000) if msg.timestamp else None,
                )
                await engine.accept(source, event.ack)

        @app.task
        async def start_engine() -> None:
            await self.engine.start()
            await self.health.start()
            self._engine_started.set()
            self._publish_readiness()
            log.info("engine started with plugins: %s", ", ".join(self.runtimes) or "(none)")

        @app.timer(GAUGE_INTERVAL_S)
        async def refresh_gauges() -> None:
            self.engine.update_gauges()
            self._publish_readiness()
            await self._update_lag()
            _update_gpu_gauges(self.metrics)

        last_totals: dict[str, int] = {}

        @app.timer(PROGRESS_LOG_INTERVAL_S)
        async def log_progress() -> None:
            totals = dict(self.engine.totals)
            if totals != last_totals:
                delta = {k: v - last_totals.get(k, 0) for k, v in totals.items()}
                log.info(
                    "last %.0f s: %d consumed, %d invalid, %d results, %d dead letters; %d in flight",
                    PROGRESS_LOG_INTERVAL_S,
                    delta.get("consumed", 0),
                    delta.get("invalid", 0),
                    delta.get("results", 0),
                    delta.get("dead_letters", 0),
                    self.engine.publisher.pending,
                )
                last_totals.update(totals)

        @app.on_partitions_assigned.connect
        async def on_assigned(app: faust.App, assigned: set, **_: object) -> None:
            self._assigned = True
            await self.engine.state.claim((tp.topic, tp.partition) for tp in assigned)
            await self.engine.kafka_sink.assign((tp.topic, tp.partition) for tp in assigned)
            self._publish_readiness()

        @app.on_partitions_revoked.connect
        async def on_revoked(app: faust.App, revoked: set, **_: object) -> None:
            # Faust already waited for every delivered record to be acked; keys may move now.
            self.engine.state.release((tp.topic, tp.partition) for tp in revoked)
            await self.engine.kafka_sink.revoke((tp.topic, tp.partition) for tp in revoked)
            for tp in revoked:
                for gauge in (self.metrics.consumer_lag, self.metrics.committed_lag):
                    with contextlib.suppress(KeyError):  # no lag recorded for it yet
                        gauge.remove(tp.topic, str(tp.partition))

        @app.on_before_shutdown.connect
        async def on_shutdown(app: faust.App, **_: object) -> None:
            await self.engine.stop()
            await self.health.stop()
            await self.redis.aclose()
            if self._admin is not None:
                await self._admin.close()

        return app

    async def _update_lag(self) -> None:
        """Consumer lag (high watermark - position) and committed lag (high watermark - the
        group's committed offset, read from the broker) of every assigned partition."""
        consumer = self.app.consumer
        try:
            assignment = consumer.assignment()
        except Exception:  # consumer not started yet
            return
        lag: dict[object, int] = {}
        highwaters: dict[tuple[str, int], int] = {}
        for tp in assignment:
            try:
                highwater = consumer.highwater(tp)
                position = await consumer.position(tp)
            except Exception:
                continue
            if highwater is not None and position is not None:
                lag[tp] = max(0, highwater - position)
                highwaters[(tp.topic, tp.partition)] = highwater
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag[tp])
        self._lag_total = sum(lag.values())
        await self._update_committed_lag(highwaters)

    async def _update_committed_lag(self, highwaters: dict[tuple[str, int], int]) -> None:
        """What a restart would replay: a commit that stopped advancing shows here while
        consumer lag stays small (records taken, never acknowledged)."""
        if not highwaters:
            return
        try:
            if self._admin is None:
                self._admin = AIOKafkaAdminClient(**aiokafka_options(self.settings.kafka))
                await self._admin.start()
            committed = await self._admin.list_consumer_group_offsets(self.group_id)
        except Exception as exc:  # the broker is away: the gauge keeps its last value
            log.debug("reading committed offsets failed: %s", exc)
            return
        offsets = {(tp.topic, tp.partition): meta.offset for tp, meta in committed.items()}
        for (topic, partition), highwater in highwaters.items():
            offset = offsets.get((topic, partition), -1)
            behind = highwater if offset < 0 else max(0, highwater - offset)
            self.metrics.committed_lag.labels(topic, str(partition)).set(behind)

    def _publish_readiness(self) -> None:
        self.metrics.up.set(1 if self._ready()[0] else 0)

    def _ready(self) -> tuple[bool, str]:
        if not self._engine_started.is_set():
            return False, "engine starting"
        if not self._assigned:
            return False, "waiting for partition assignment"
        return True, "consuming"

    def _live(self) -> tuple[bool, str]:
        """Alive unless the worker is stuck where it cannot heal alone: records pending with
        none acked (a sink refusing everything), or records waiting in Kafka with none taken
        (the consuming agent gone), or (exactly_once) a partition still assigned here
        while another producer fenced its transactions, for longer than ``stall_timeout_s``.
        Not alive either while a plugin's threads of timed-out batches are at
        ``max_abandoned_threads``: only a restart frees a hung thread."""
        limit = self.settings.stall_timeout_s
        stalled = self.engine.publisher.stalled_s()
        if stalled > limit:
            return False, f"{self.engine.publisher.pending} records pending, none acked for {stalled:.0f} s"
        fenced = self.engine.kafka_sink.fenced_for_s()
        if fenced > limit:
            return False, f"a partition's transactions fenced for {fenced:.0f} s and no rebalance took it"
        for name, runtime in self.runtimes.items():
            if (refusal := runtime.abandoned.refusal) is not None:
                return False, f"plugin {name}: {refusal}"
        idle = time.monotonic() - self.engine.last_accept
        if self._lag_total > 0 and idle > limit:
            return False, f"{self._lag_total} records waiting in Kafka, none taken for {idle:.0f} s"
        return True, "alive"

    def run(self) -> None:
        """Run until SIGTERM/SIGINT; blocks. Exits within ``shutdown_timeout_s`` of the signal."""
        ensure_topics(self.settings.kafka, self.topics())
        worker = _BoundedWorker(
            self.app,
            self.settings.shutdown_timeout_s,
            loglevel=self.settings.log_level,
            redirect_stdouts=False,
            override_logging=False,
            quiet=True,
        )
        worker.execute_from_commandline()


class _BoundedWorker(faust.Worker):
    """faust.Worker whose shutdown after SIGTERM/SIGINT is bounded by a watchdog."""

    def __init__(self, app: faust.App, shutdown_timeout_s: float, **kwargs: object) -> None:
        super().__init__(app, **kwargs)
        self._shutdown_timeout_s = shutdown_timeout_s

    def _schedule_shutdown(self, signal: object) -> None:
        if not self._signal_stop_time:
            timer = threading.Timer(self._shutdown_timeout_s, _hard_exit, args=(self._shutdown_timeout_s,))
            timer.daemon = True
            timer.start()
        super()._schedule_shutdown(signal)


def _hard_exit(bound_s: float) -> None:
    log.error("shutdown exceeded %.1f s; exiting now (uncommitted records will be redelivered)", bound_s)
    logging.shutdown()
    os._exit(3)


def _update_gpu_gauges(metrics: Metrics) -> None:
    if not torch.cuda.is_available():
        return
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        metrics.gpu_memory_used.labels(str(index)).set(total - free)
        metrics.gpu_memory_total.labels(str(index)).set(total)
