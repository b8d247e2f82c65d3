"""The engine: from a consumed record to its publication, independent of Faust.

``Engine.accept`` is called by the Faust agent for every record, in partition order. It
decodes the record (refusals become dead letters), applies keyed plugin state in input
order, and starts the record's work: each routed plugin's micro-batcher, then the
plugins its results chain to. It returns as soon as the work is queued, so records of
all partitions are in flight together and batches can fill; ``max_in_flight`` bounds
them (when full, ``accept`` waits, the agent stops taking records and Faust pauses
fetching). The ordered publisher writes and acks (``streamproc.engine.delivery``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from streamproc.config import Settings
from streamproc.engine.batching import MicroBatcher
from streamproc.engine.delivery import OrderedPublisher, PendingRecord, Publication
from streamproc.engine.model_process import ModelProcessPool
from streamproc.engine.routing import MAX_CHAIN_DEPTH, Router
from streamproc.engine.runtime import BatchStats, PluginRuntime
from streamproc.engine.sinks import KafkaSink, RedisSink
from streamproc.engine.state import KeyedStateStore
from streamproc.errors import InvalidEvent, StateError
from streamproc.events import DerivedEvent, Event, InputEvent, decode_event, peek_identity
from streamproc.ops.metrics import Metrics
from streamproc.records import DeadLetter, ResultRecord, SourceRecord, input_digest, now_ms

log = logging.getLogger(__name__)


class Engine:
    """Routes records through plugin batchers and hands publications to the publisher."""

    def __init__(
        self,
        settings: Settings,
        runtimes: Mapping[str, PluginRuntime],
        router: Router,
        redis_sink: RedisSink,
        kafka_sink: KafkaSink,
        state: KeyedStateStore,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.runtimes = runtimes
        self.router = router
        self.redis_sink = redis_sink
        self.kafka_sink = kafka_sink
        self.state = state
        self.metrics = metrics
        self.limits = settings.limits.payload_limits()
        self.pools = {
            name: ModelProcessPool(
                settings,
                name,
                settings.model_processes,
                settings.model_threads,
                settings.infer_timeout_s,
                lambda reason, name=name: metrics.model_process_restarts.labels(name, reason).inc(),
            )
            for name in runtimes
            if settings.model_processes > 0
        }
        self.batchers = {
            name: MicroBatcher(rt, settings.infer_timeout_s, self._observe_batch, self.pools.get(name))
            for name, rt in runtimes.items()
        }
        self.publisher = OrderedPublisher(
            redis_sink,
            kafka_sink,
            settings.publish_retry_s,
            self._release,
            self._observe_published,
            self._observe_sink_failure,
            metrics.publish_seconds.observe,
            state.evict_partition,
        )
        self._in_flight = asyncio.Semaphore(settings.max_in_flight)
        self.started = False
        self.last_accept = time.monotonic()
        """When ``accept`` last took a record (monotonic seconds), for the liveness probe."""
        self.totals: Counter[str] = Counter()  # consumed, invalid, results, dead letters: for progress logs

    async def start(self) -> None:
        """Start the Kafka producer and, with ``model_processes``, every plugin's model
        processes (loading them takes seconds: off the event loop, all plugins at once)."""
        await self.kafka_sink.start()
        if self.pools:
            started = time.monotonic()
            await asyncio.gather(*(asyncio.to_thread(pool.start) for pool in self.pools.values()))
            for name, pool in self.pools.items():
                self.runtimes[name].plugin.model_version = pool.model_version
            log.info(
                "%d model process(es) per plugin loaded in %.1f s",
                self.settings.model_processes,
                time.monotonic() - started,
            )
        for batcher in self.batchers.values():
            batcher.start()
        for runtime in self.runtimes.values():
            self.metrics.model_info.labels(
                runtime.name, runtime.plugin.model_version, str(runtime.device), runtime.dtype_name
            ).set(1)
        self.started = True

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every accepted record is published and acked."""
        drained = await self.publisher.drain(timeout_s)
        if not drained:
            log.warning("drain: %d records still unpublished after %.1f s", self.publisher.pending, timeout_s)
        return drained

    async def stop(self) -> None:
        self.started = False
        await self.publisher.stop()
        for batcher in self.batchers.values():
            await batcher.stop()
        for pool in self.pools.values():
            await asyncio.to_thread(pool.stop)
        await self.kafka_sink.stop()

    async def accept(self, source: SourceRecord, ack: Callable[[], object]) -> None:
        """Take one record (in partition order); returns once its work is queued.

        Never raises for a record: whatever the record holds, and even if the engine itself
        fails on it, the record is enqueued and ends as results or dead letters, so its
        partition's commits go on (an exception here would stop the agent and stall every
        partition it reads, with health still green)."""
        await self._in_flight.acquire()
        self.metrics.in_flight.inc()
        self.last_accept = time.monotonic()
        try:
            work = await self._start(source)
        except asyncio.CancelledError:
            self._in_flight.release()
            self.metrics.in_flight.dec()
            raise
        except Exception as exc:  # the engine's own bug: dead-letter the record, keep consuming
            log.exception("engine failed on %s", source.position)
            work = _finished(Publication(dead_letters=[DeadLetter(source, "engine", f"{type(exc).__name__}: {exc}")]))
        self.publisher.enqueue(PendingRecord(source, work, ack))

    async def _start(self, source: SourceRecord) -> asyncio.Future[Publication]:
        """Decode the record, apply keyed state in input order, start its plugins' work."""
        try:
            event = decode_event(source.value, self.limits)
        except InvalidEvent as exc:
            self.metrics.events_invalid.labels("decode").inc()
            self.totals["invalid"] += 1
            event_id, event_type = peek_identity(source.value)
            letter = DeadLetter(source, "decode", exc.reason, event_id=event_id, event_type=event_type)
            return _finished(Publication(dead_letters=[letter]))
        self.metrics.events_consumed.labels(event.type).inc()
        if event.ignored_fields:
            self.metrics.fields_ignored.labels(event.type).inc(len(event.ignored_fields))
        self.totals["consumed"] += 1
        publication = Publication()
        states: dict[str, Mapping[str, Any] | None] = {}
        for name in self.router.plugins_for(event.type):
            try:
                states[name], write = await self.state.apply(self.runtimes[name].plugin, event, source)
            except StateError as exc:
                self.metrics.plugin_errors.labels(name, "state").inc()
                publication.dead_letters.append(
                    DeadLetter(source, "state", str(exc), plugin=name, event_id=event.id, event_type=event.type)
                )
                continue
            if write is not None:
                publication.state_writes.append(write)
        return asyncio.get_running_loop().create_task(self._process(event, source, states, publication))

    async def _process(
        self,
        event: InputEvent,
        source: SourceRecord,
        states: Mapping[str, Mapping[str, Any] | None],
        publication: Publication,
    ) -> Publication:
        refused = {letter.plugin for letter in publication.dead_letters}
        await self._fan_out(event, source, states, publication, depth=0, skip=refused)
        return publication

    async def _fan_out(
        self,
        event: Event,
        source: SourceRecord,
        states: Mapping[str, Mapping[str, Any] | None],
        publication: Publication,
        depth: int,
        skip: set[str | None] | None = None,
    ) -> None:
        names = [n for n in self.router.plugins_for(event.type) if not skip or n not in skip]
        if not names or depth > MAX_CHAIN_DEPTH:
            return
        if len(names) == 1:  # the common case: no task for gather to wrap the one submission in
            outcomes = [await self.batchers[names[0]].submit(event, states.get(names[0]))]
        else:
            outcomes = await asyncio.gather(*(self.batchers[n].submit(event, states.get(n)) for n in names))
        origin = event.origin if isinstance(event, DerivedEvent) else event
        chained: list[DerivedEvent] = []
        for name, outcome in zip(names, outcomes, strict=True):
            runtime = self.runtimes[name]
            if outcome.failure is not None:
                publication.dead_letters.append(
                    DeadLetter(
                        source,
                        outcome.failure.stage,
                        outcome.failure.reason,
                        plugin=name,
                        event_id=event.id,
                        event_type=event.type,
                    )
                )
                continue
            if outcome.body is None:
                continue
            record = ResultRecord(
                event_id=event.id,
                plugin=name,
                model_version=runtime.plugin.model_version,
                kind=runtime.produces,
                key=event.key,
                event_ts=event.ts,
                result_ts=now_ms(),
                body=outcome.body,
                body_json=outcome.body_json,
                input_digest=input_digest(source.value),
            )
            publication.results.append((self.router.output_topic(name), record))
            if self.router.plugins_for(runtime.produces):
                chained.append(DerivedEvent(type=runtime.produces, plugin=name, body=outcome.body, origin=origin))
        if chained:
            await asyncio.gather(*(self._fan_out(d, source, {}, publication, depth + 1) for d in chained))

    def _observe_batch(self, runtime: PluginRuntime, stats: BatchStats) -> None:
        if stats.size:
            self.metrics.batch_size.labels(runtime.name).observe(stats.size)
            self.metrics.inference_seconds.labels(runtime.name).observe(stats.infer_s)
        for stage, count in stats.errors.items():
            self.metrics.plugin_errors.labels(runtime.name, stage).inc(count)

    def _release(self, record: PendingRecord, publication: Publication) -> None:
        """Flow control for an acked record (delivery step 5): free its in-flight slot and
        mark its state writes written."""
        self._in_flight.release()
        for write in publication.state_writes:
            self.state.written(write)

    def _observe_published(self, record: PendingRecord, publication: Publication) -> None:
        self.metrics.in_flight.dec()
        now = time.time()
        for _, result in publication.results:
            self.metrics.results.labels(result.plugin, result.kind).inc()
            self.totals["results"] += 1
            self.metrics.latency_seconds.labels(result.plugin).observe(max(0.0, now - result.event_ts / 1000))
        for letter in publication.dead_letters:
            self.metrics.dead_letters.labels(letter.stage, letter.plugin or "").inc()
            self.totals["dead_letters"] += 1

    def _observe_sink_failure(self, sink: str, error: BaseException) -> None:
        self.metrics.sink_failures.labels(sink).inc()
        log.warning(
            "%s write failed (%s: %s); retrying in %.1f s",
            sink,
            type(error).__name__,
            error,
            self.settings.publish_retry_s,
        )

    def update_gauges(self) -> None:
        """Refresh queue-depth, abandoned-thread and model-process memory gauges (called periodically)."""
        for name, batcher in self.batchers.items():
            self.metrics.queue_depth.labels(name).set(batcher.depth)
            self.metrics.abandoned_threads.labels(name).set(batcher.runtime.abandoned.running)
        for name, pool in self.pools.items():
            self.metrics.model_process_memory.labels(name).set(sum(pool.rss_bytes()))


def _finished(publication: Publication) -> asyncio.Future[Publication]:
    """Work that is already done: a record refused before any plugin ran."""
    work: asyncio.Future[Publication] = asyncio.get_running_loop().create_future()
    work.set_result(publication)
    return work
