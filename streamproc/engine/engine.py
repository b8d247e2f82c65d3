"""The engine: from a consumed record to its publication, independent of Faust.

``Engine.accept`` is called by the Faust agent for every record, in partition order. It
only queues the record: on its partition's publication queue and on the intake. The
intake takes every record accepted since its last pass as one batch (a pass starts a
couple of milliseconds after the first record arrived; under load a batch is what the
agent handed over meanwhile): it decodes each record (refusals become dead letters) and
applies keyed plugin state, in input order; then, for each route (the records whose
events go to the same plugins), one task per chunk of records (as many as the route's
smallest model batch, so that a chunk's records are published while the next chunk
computes) submits the chunk's events to every plugin's micro-batcher at once, one
submission per plugin, and then the derived events to the plugins the results chain to.
There is no task and no future per event in the batchers; each record has one future,
its work, completed when its publication is whole.

``accept`` returns at once, so records of all partitions are in flight together and
model batches can fill; ``max_in_flight`` bounds them (when full, ``accept`` waits, the
agent stops taking records and Faust pauses fetching). The ordered publisher writes and
acks (``streamproc.engine.delivery``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from streamproc.events import DerivedEvent, Event, decode_event, peek_identity
from streamproc.ops.metrics import Metrics
from streamproc.records import DeadLetter, ResultRecord, SourceRecord, input_digest, now_ms

log = logging.getLogger(__name__)

INTAKE_LINGER_S = 0.002
"""How long the intake lets records gather after the first one (see ``Engine._run_intake``)."""


@dataclass(slots=True)
class _Job:
    """An event on its way through the plugins: an input event, or a result that chains
    on, with the record it came from and the publication its outcomes join."""

    event: Event
    source: SourceRecord
    work: asyncio.Future[Publication]
    publication: Publication
    states: Mapping[str, Mapping[str, Any] | None]
    skip: frozenset[str | None] = frozenset()
    """Plugins the event must not reach (its state failed for them)."""


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
        self._intake: list[tuple[SourceRecord, asyncio.Future[Publication]]] = []
        self._intake_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        """The intake and the routes' work in progress (cancelled by ``stop``)."""
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
        self._spawn(self._run_intake(), "intake")
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
        """Stop everything; records not yet acked stay uncommitted and will be redelivered."""
        self.started = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.publisher.stop()
        for batcher in self.batchers.values():
            await batcher.stop()
        for pool in self.pools.values():
            await asyncio.to_thread(pool.stop)
        await self.kafka_sink.stop()

    async def accept(self, source: SourceRecord, ack: Callable[[], object]) -> None:
        """Take one record (in partition order); returns once it is queued (waits while
        ``max_in_flight`` records are unacked).

        Never raises for a record: whatever the record holds, and even if the engine itself
        fails on it, the record ends as results or dead letters, so its partition's commits
        go on (an exception here would stop the agent and stall every partition it reads,
        with health still green)."""
        await self._in_flight.acquire()
        self.metrics.in_flight.inc()
        self.last_accept = time.monotonic()
        work: asyncio.Future[Publication] = asyncio.get_running_loop().create_future()
        self.publisher.enqueue(PendingRecord(source, work, ack))
        self._intake.append((source, work))
        self._intake_ready.set()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_intake(self) -> None:
        """Take the records accepted since the last pass, as one batch, in input order.

        A pass starts ``INTAKE_LINGER_S`` after the first record of its batch arrived: Faust's
        stream yields to the event loop before every record, so without the wait each pass
        would take one record. Under load the loop is busy and the batch grows to what the
        agent handed over meanwhile; an idle worker adds the linger to one record's latency."""
        while True:
            await self._intake_ready.wait()
            await asyncio.sleep(INTAKE_LINGER_S)
            self._intake_ready.clear()
            batch, self._intake = self._intake, []
            self.metrics.intake_batch.observe(len(batch))
            try:
                await self._start_batch(batch)
            except Exception as exc:  # the engine's own bug: no record may be left without an end
                log.exception("engine failed on a batch of %d records", len(batch))
                for source, work in batch:
                    if not work.done():
                        work.set_result(Publication(dead_letters=[_engine_letter(source, exc)]))

    async def _start_batch(self, batch: Sequence[tuple[SourceRecord, asyncio.Future[Publication]]]) -> None:
        """Decode each record and apply its keyed state, in input order; then start the work
        of the records that got that far: per route, one task per chunk of as many records
        as the route's smallest model batch."""
        routes: dict[tuple[str, ...], list[_Job]] = {}
        for source, work in batch:
            try:
                job = await self._prepare(source, work)
                if job is not None:
                    routes.setdefault(tuple(self.router.plugins_for(job.event.type)), []).append(job)
            except Exception as exc:  # the engine's own bug: dead-letter the record, keep consuming
                log.exception("engine failed on %s", source.position)
                if not work.done():
                    work.set_result(Publication(dead_letters=[_engine_letter(source, exc)]))
        for names, jobs in routes.items():
            # one task per model batch's worth: a chunk's records publish while the next computes
            size = min((self.runtimes[name].policy.max_batch_size for name in names), default=len(jobs))
            for start in range(0, len(jobs), size):
                self._spawn(self._finish(jobs[start : start + size]), f"route-{'+'.join(names)}")

    async def _prepare(self, source: SourceRecord, work: asyncio.Future[Publication]) -> _Job | None:
        """Decode the record and apply keyed state; ``None`` when the record was refused
        (its work is then done: a dead letter)."""
        try:
            event = decode_event(source.value, self.limits)
        except InvalidEvent as exc:
            self.metrics.events_invalid.labels("decode").inc()
            self.totals["invalid"] += 1
            event_id, event_type = peek_identity(source.value)
            letter = DeadLetter(source, "decode", exc.reason, event_id=event_id, event_type=event_type)
            work.set_result(Publication(dead_letters=[letter]))
            return None
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
        refused = frozenset(letter.plugin for letter in publication.dead_letters)
        return _Job(event, source, work, publication, states, refused)

    async def _finish(self, jobs: Sequence[_Job]) -> None:
        """Run the records' events through their plugins, then complete each record's work.
        An engine failure adds an ``engine`` dead letter to each record not yet complete,
        beside what its publication already holds (state writes, results)."""
        try:
            await self._fan_out(jobs, depth=0)
        except Exception as exc:
            log.exception("engine failed on %d records from %s", len(jobs), jobs[0].source.position)
            for job in jobs:
                job.publication.dead_letters.append(_engine_letter(job.source, exc, job.event))
        for job in jobs:
            if not job.work.done():
                job.work.set_result(job.publication)

    async def _fan_out(self, jobs: Sequence[_Job], depth: int) -> None:
        """Submit the jobs' events to their plugins, one submission per plugin; add each
        outcome to its record's publication; then the same for the results that chain on."""
        if depth > MAX_CHAIN_DEPTH:
            return
        shares: dict[str, list[_Job]] = {}
        for job in jobs:
            for name in self.router.plugins_for(job.event.type):
                if name not in job.skip:
                    shares.setdefault(name, []).append(job)
        if not shares:
            return
        submissions = [
            self.batchers[name].submit_many([(job.event, job.states.get(name)) for job in share])
            for name, share in shares.items()
        ]
        # the common case, one plugin: no task for gather to wrap the one submission in
        answers = [await submissions[0]] if len(submissions) == 1 else await asyncio.gather(*submissions)
        chained: list[_Job] = []
        for (name, share), outcomes in zip(shares.items(), answers, strict=True):
            runtime = self.runtimes[name]
            chains = bool(self.router.plugins_for(runtime.produces))
            for job, outcome in zip(share, outcomes, strict=True):
                event = job.event
                if outcome.failure is not None:
                    job.publication.dead_letters.append(
                        DeadLetter(
                            job.source,
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
                    input_digest=input_digest(job.source.value),
                )
                job.publication.results.append((self.router.output_topic(name), record))
                if chains:
                    origin = event.origin if isinstance(event, DerivedEvent) else event
                    derived = DerivedEvent(type=runtime.produces, plugin=name, body=outcome.body, origin=origin)
                    chained.append(_Job(derived, job.source, job.work, job.publication, {}))
        if chained:
            await self._fan_out(chained, depth + 1)

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


def _engine_letter(source: SourceRecord, error: BaseException, event: Event | None = None) -> DeadLetter:
    """The dead letter of a record the engine itself failed on (a bug, never the record's fault)."""
    return DeadLetter(
        source,
        "engine",
        f"{type(error).__name__}: {error}",
        event_id=event.id if event is not None else None,
        event_type=event.type if event is not None else None,
    )
