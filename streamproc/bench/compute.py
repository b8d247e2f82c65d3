"""The compute limit: plugins' offline batched inference, with no Kafka and no Redis.

What it measures is ``PluginRuntime.run_batch`` (prepare, one batched ``infer``, result
bodies) on real demo events, already decoded and with their keyed state applied as the
engine would (decoding and state are the pipeline's work, timed here separately as
``decode_ms_per_event``). For one plugin it sweeps batch sizes and keeps the fastest;
for several (the mixed workload) it runs every routed plugin, chained results included,
at each plugin's best size, the plugins concurrently, each on its own thread as in the
worker. In ``rate`` mode it measures one configuration of the fair limit (torch threads
x processes, ``streamproc.bench.run``) at fixed batch sizes. It also drives the engine's own
``MicroBatcher`` in process (``drive_batcher``): batching, the plugin thread and
``run_batch``, still with no Kafka, Redis, decoding or ordered publishing.

Run as ``python -m streamproc.bench.compute SPEC OUT`` (settings from
``STREAMPROC_CONFIG_FILE``) so that each plugin is measured alone in a fresh process:
its memory after load and after a warm-up batch is part of the result. The events it
used are written as the workload of the later (Kafka) stages.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamproc.bench.process import peak_rss_mb, rss_mb
from streamproc.bench.stats import latency_summary, percentile, steady_rate
from streamproc.bench.workload import WorkloadRecord, demo_pool, write_workload
from streamproc.engine.routing import MAX_CHAIN_DEPTH

if TYPE_CHECKING:
    from streamproc.config import Settings

Item = tuple[Any, Mapping[str, Any] | None]


@dataclass
class SweepPoint:
    """Offline throughput of one batch size: timed batches after one untimed warm-up batch."""

    batch_size: int
    batches: int = 0
    events: int = 0
    seconds: float = 0.0
    infer_seconds: float = 0.0
    failures: int = 0
    batch_ms: list[float] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "batches": self.batches,
            "events": self.events,
            "seconds": round(self.seconds, 4),
            "events_per_s": round(self.events_per_s, 2),
            "infer_share": round(self.infer_seconds / self.seconds, 3) if self.seconds else None,
            "batch_ms_p50": round(percentile(self.batch_ms, 0.5), 3),
            "batch_ms_max": round(max(self.batch_ms), 3) if self.batch_ms else None,
            "failures": self.failures,
        }


def sizes_to_try(max_batch_size: int, quick: bool = False) -> list[int]:
    """Powers of two up to the policy's largest batch, and that size itself."""
    if quick:
        return sorted({1, max(1, max_batch_size // 4), max_batch_size})
    sizes = {1, max_batch_size}
    size = 2
    while size < max_batch_size:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def _cycle(items: Sequence[Item], start: int, size: int) -> list[Item]:
    return [items[(start + i) % len(items)] for i in range(size)]


class PluginThread:
    """A runtime's ``run_batch`` on a thread of its own, as the engine's ``MicroBatcher`` runs it.

    Torch's intra-op parallelism belongs to the calling thread (OpenMP thread teams are
    per thread), and on a busy machine a main thread's team can be many times slower
    than a single thread; so the compute limit is measured on the same kind of thread
    the worker computes on, not on the main thread.
    """

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"plugin-{runtime.name}")

    def run_batch(self, items: Sequence[Item]) -> tuple[list[Any], Any, float]:
        """Outcomes, batch stats and wall seconds of one ``run_batch`` on the plugin thread."""
        return self.submit(items).result()

    def submit(self, items: Sequence[Item]) -> Future[tuple[list[Any], Any, float]]:
        """``run_batch`` queued on the plugin thread (batches of one plugin run one at a time)."""
        return self._pool.submit(self._timed, items)

    def _timed(self, items: Sequence[Item]) -> tuple[list[Any], Any, float]:
        started = time.perf_counter()
        outcomes, stats = self.runtime.run_batch(items)
        return outcomes, stats, time.perf_counter() - started

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def sweep(
    thread: PluginThread,
    items: Sequence[Item],
    sizes: Sequence[int],
    budget_s: float,
    min_batches: int = 3,
    deadline: float | None = None,
) -> list[SweepPoint]:
    """Time ``run_batch`` at each batch size (ascending) for about ``budget_s`` seconds each.

    Items are taken in order and cycled when a size needs more than there are. Each
    size starts with one untimed batch (allocator and kernel caches warm up per shape).
    With a ``deadline`` (``time.time()``), a size whose predicted cost (from the last
    size's time per item) would pass it is not started.
    """
    points: list[SweepPoint] = []
    for size in sorted(sizes):
        if deadline is not None and points:
            per_item = points[-1].seconds / max(points[-1].events, 1)
            if time.time() + (min_batches + 1) * size * per_item > deadline:
                break
        thread.run_batch(_cycle(items, 0, size))
        point = SweepPoint(size)
        position = size
        started = time.perf_counter()
        while point.batches < min_batches or time.perf_counter() - started < budget_s:
            batch = _cycle(items, position, size)
            position += size
            outcomes, stats, elapsed = thread.run_batch(batch)
            point.batches += 1
            point.events += len(batch)
            point.seconds += elapsed
            point.infer_seconds += stats.infer_s
            point.failures += sum(1 for o in outcomes if o.failure is not None)
            point.batch_ms.append(elapsed * 1000)
        points.append(point)
    return points


def offline_state(plugin: Any, event: Any, states: dict[str, Mapping[str, Any] | None]) -> Mapping[str, Any] | None:
    """The plugin's state after ``event``, applied in input order as the engine does (in memory)."""
    key = plugin.state_key(event)
    if key is None:
        return None
    updated = dict(plugin.update_state(states.get(key), event))
    states[key] = updated
    return updated


@dataclass
class Selected:
    """A workload event: its record, the decoded event and each routed plugin's state."""

    record: WorkloadRecord
    event: Any
    states: dict[str, Mapping[str, Any] | None]


class EventSelector:
    """Events (lazily, in order; demo events unless a ``pool`` is given) for the given plugins.

    ``require_work``: keep an event only when some routed plugin's ``prepare`` gives an
    input (an upload without an artwork request is no work for the artwork plugin).
    """

    def __init__(
        self,
        runtimes: Mapping[str, Any],
        router: Any,
        limits: Any,
        require_work: bool,
        pool: Iterator[WorkloadRecord] | None = None,
        seed: int = 7,
    ) -> None:
        self.runtimes = runtimes
        self.router = router
        self.limits = limits
        self.require_work = require_work
        self._pool: Iterator[WorkloadRecord] = pool if pool is not None else demo_pool(10_000_000, seed)
        self._states: dict[str, dict[str, Mapping[str, Any] | None]] = {name: {} for name in runtimes}
        self.decode_seconds = 0.0
        self.decoded = 0
        self.selected: list[Selected] = []

    def take(self, count: int) -> list[Selected]:
        """At least ``count`` events selected so far (fewer only if the pool runs dry)."""
        from streamproc.errors import InvalidEvent
        from streamproc.events import decode_event

        while len(self.selected) < count:
            record = next(self._pool, None)
            if record is None:
                break
            names = self.router.plugins_for(record.event_type)
            if not names:
                continue
            started = time.perf_counter()
            try:
                event = decode_event(record.value, self.limits)
            except InvalidEvent:
                continue
            self.decode_seconds += time.perf_counter() - started
            self.decoded += 1
            states = {n: offline_state(self.runtimes[n].plugin, event, self._states[n]) for n in names}
            if self.require_work and not any(self._has_work(n, event, states[n]) for n in names):
                continue
            self.selected.append(Selected(record, event, states))
        return self.selected[:count]

    def _has_work(self, name: str, event: Any, state: Mapping[str, Any] | None) -> bool:
        try:
            return self.runtimes[name].plugin.prepare(event, state) is not None
        except Exception:  # refused or broken input: no work for this plugin
            return False


@dataclass
class MixRun:
    """One offline pass of a mixed workload through every routed plugin."""

    seconds: float
    results: list[int]
    plugin_seconds: dict[str, float]
    plugin_items: dict[str, int]


def run_mix(
    threads: Mapping[str, PluginThread], router: Any, selected: Sequence[Selected], sizes: Mapping[str, int]
) -> MixRun:
    """Every event through every plugin its type (and its results' kinds) route to.

    Plugins run concurrently, each on its own thread as in the worker, each on all of its
    items in batches of ``sizes[plugin]``; chained results (transcript -> translator)
    follow in a next wave. ``plugin_seconds`` is each plugin thread's busy time.
    """
    from streamproc.events import DerivedEvent

    results = [0] * len(selected)
    plugin_seconds = dict.fromkeys(threads, 0.0)
    plugin_items = dict.fromkeys(threads, 0)
    pending: dict[str, list[tuple[Any, Mapping[str, Any] | None, int]]] = {}
    for index, chosen in enumerate(selected):
        for name in router.plugins_for(chosen.event.type):
            pending.setdefault(name, []).append((chosen.event, chosen.states.get(name), index))
    started = time.perf_counter()
    depth = 0
    while pending and depth <= MAX_CHAIN_DEPTH:
        submitted = []
        for name, work in sorted(pending.items()):
            size = max(1, sizes.get(name, threads[name].runtime.policy.max_batch_size))
            for start in range(0, len(work), size):
                chunk = work[start : start + size]
                submitted.append((name, chunk, threads[name].submit([(event, state) for event, state, _ in chunk])))
            plugin_items[name] += len(work)
        chained: dict[str, list[tuple[Any, Mapping[str, Any] | None, int]]] = {}
        for name, chunk, future in submitted:
            outcomes, _, elapsed = future.result()
            plugin_seconds[name] += elapsed
            produces = threads[name].runtime.produces
            for (event, _, index), outcome in zip(chunk, outcomes, strict=True):
                if outcome.body is None:
                    continue
                results[index] += 1
                origin = event.origin if isinstance(event, DerivedEvent) else event
                derived = DerivedEvent(type=produces, plugin=name, body=outcome.body, origin=origin)
                for nxt in router.plugins_for(derived.type):
                    chained.setdefault(nxt, []).append((derived, None, index))
        pending = chained
        depth += 1
    return MixRun(time.perf_counter() - started, results, plugin_seconds, plugin_items)


@dataclass
class BatcherRun:
    """The engine's MicroBatcher driven in process: throughput or latency at a paced rate."""

    submitted: int
    completed: int
    failures: int
    seconds: float
    events_per_s: float | None
    latencies_ms: list[float]
    batch_sizes: list[int]

    def summary(self) -> dict[str, Any]:
        sizes = self.batch_sizes
        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "failures": self.failures,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 2) if self.events_per_s else None,
            "latency": latency_summary(self.latencies_ms),
            "batches": len(sizes),
            "batch_size_mean": round(sum(sizes) / len(sizes), 2) if sizes else None,
            "batch_size_max": max(sizes) if sizes else None,
        }


async def drive_batcher(
    runtime: Any,
    items: Sequence[Item],
    count: int,
    rate: float | None = None,
    max_in_flight: int = 1024,
    timeout_s: float = 60.0,
    warmup_s: float = 0.0,
    max_s: float | None = None,
) -> BatcherRun:
    """Submit ``count`` items to a fresh ``MicroBatcher`` and await every outcome.

    ``rate`` None: as fast as the batcher takes them, at most ``max_in_flight`` waiting
    (the engine's bound); otherwise paced at ``rate`` per second. Submitting stops early
    after ``max_s`` seconds. Latency is submit to outcome, for items submitted after
    ``warmup_s``.
    """
    from streamproc.engine.batching import MicroBatcher

    batch_sizes: list[int] = []
    batcher = MicroBatcher(runtime, timeout_s, lambda _rt, stats: batch_sizes.append(stats.size))
    batcher.start()
    loop = asyncio.get_running_loop()
    bound = asyncio.Semaphore(max_in_flight)
    completions: list[float] = []
    latencies: list[float] = []
    failures = 0
    t_start = loop.time()

    async def one(item: Item, measured: bool) -> None:
        nonlocal failures
        submitted = loop.time()
        try:
            outcome = await batcher.submit(*item)
        finally:
            bound.release()
        done = loop.time()
        completions.append(done)
        if outcome.failure is not None:
            failures += 1
        if measured:
            latencies.append((done - submitted) * 1000)

    tasks = []
    for i in range(count):
        if max_s is not None and loop.time() - t_start > max_s:
            break
        if rate is not None:
            delay = t_start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await bound.acquire()
        measured = loop.time() - t_start >= warmup_s
        tasks.append(loop.create_task(one(items[i % len(items)], measured)))
    await asyncio.gather(*tasks)
    await batcher.stop()
    return BatcherRun(
        len(tasks),
        len(completions),
        failures,
        loop.time() - t_start,
        steady_rate(completions),
        latencies,
        [s for s in batch_sizes if s],
    )


def _use_every_core(settings: Settings) -> None:
    """The compute limit runs one batch at a time with nothing beside it: every core for torch
    (unless ``cpu_threads`` is set), where the worker leaves one to its event loop."""
    from streamproc.engine.runtime import configure_cpu_threads

    configure_cpu_threads(settings.cpu_threads, plugin_threads=1, reserved_cores=0)


def _measure_plugin(spec: Mapping[str, Any], out: dict[str, Any]) -> None:
    from streamproc.config import load_settings
    from streamproc.registry import build_router, load_plugins

    name = spec["plugins"][0]
    settings = load_settings()
    out["memory"] = {"rss_imports_mb": round(rss_mb(), 1)}
    runtimes, reports = load_plugins(settings)
    _use_every_core(settings)
    failed = [r for r in reports if r.error]
    if name not in runtimes:
        out["error"] = failed[0].error if failed else f"plugin {name!r} is not installed or not enabled"
        return
    runtime = runtimes[name]
    out["memory"]["rss_loaded_mb"] = round(rss_mb(), 1)
    out.update(_runtime_facts(runtime))
    router = build_router(settings, runtimes)
    selector = EventSelector(runtimes, router, settings.limits.payload_limits(), True, seed=spec["seed"])
    max_bs = runtime.policy.max_batch_size
    initial = selector.take(min(spec["events"], max(2 * max_bs, 64)))
    if not initial:
        out["error"] = "no demo event carries work for this plugin (demo data missing?)"
        return
    items = [(s.event, s.states.get(name)) for s in initial]
    thread = PluginThread(runtime)
    thread.run_batch(_cycle(items, 0, max_bs))  # warm-up batch
    out["memory"]["rss_warm_mb"] = round(rss_mb(), 1)
    points = sweep(thread, items, spec.get("sizes") or sizes_to_try(max_bs, spec["quick"]), spec["budget_s"])
    thread.close()
    best = max(points, key=lambda p: p.events_per_s)
    out["sweep"] = [p.summary() for p in points]
    out["best_batch_size"] = best.batch_size
    out["events_per_s"] = round(best.events_per_s, 2)
    out["batch1_events_per_s"] = round(points[0].events_per_s, 2)
    count = _run_size(best.events_per_s, spec)
    chosen = selector.take(count)
    out["decode_ms_per_event"] = round(1000 * selector.decode_seconds / max(selector.decoded, 1), 3)
    in_process = min(len(chosen), max(4 * max_bs, int(best.events_per_s * spec["inprocess_s"])))
    chosen_items = [(s.event, s.states.get(name)) for s in chosen]
    run = asyncio.run(
        drive_batcher(runtime, chosen_items, in_process, None, settings.max_in_flight, max_s=2 * spec["inprocess_s"])
    )
    out["in_process"] = run.summary()
    out["memory"]["peak_rss_mb"] = round(peak_rss_mb() or 0.0, 1)
    records = [replace(s.record, results=1) for s in chosen]
    out["workload"] = {"path": spec["workload"], "events": write_workload(Path(spec["workload"]), records)}


def _measure_mix(spec: Mapping[str, Any], out: dict[str, Any]) -> None:
    from streamproc.config import load_settings
    from streamproc.registry import build_router, load_plugins

    settings = load_settings()
    out["memory"] = {"rss_imports_mb": round(rss_mb(), 1)}
    runtimes, reports = load_plugins(settings)
    _use_every_core(settings)
    if not runtimes:
        out["error"] = "; ".join(f"{r.name}: {r.error}" for r in reports if r.error) or "no plugin loaded"
        return
    out["memory"]["rss_loaded_mb"] = round(rss_mb(), 1)
    out["plugins"] = sorted(runtimes)
    out["runtime"] = {name: _runtime_facts(rt) for name, rt in runtimes.items()}
    router = build_router(settings, runtimes)
    selector = EventSelector(runtimes, router, settings.limits.payload_limits(), False, seed=spec["seed"])
    sizes = spec.get("batch_sizes") or {}
    initial = selector.take(min(spec["events"], 128))
    if not initial:
        out["error"] = "no demo event is routed to these plugins"
        return
    threads = {name: PluginThread(rt) for name, rt in runtimes.items()}
    run_mix(threads, router, initial[:32], sizes)  # warm-up
    out["memory"]["rss_warm_mb"] = round(rss_mb(), 1)
    estimate = run_mix(threads, router, initial, sizes)
    count = _run_size(len(initial) / estimate.seconds, spec)
    chosen = selector.take(count)
    timed = run_mix(threads, router, chosen, sizes)
    for thread in threads.values():
        thread.close()
    out["events"] = len(chosen)
    out["seconds"] = round(timed.seconds, 3)
    out["events_per_s"] = round(len(chosen) / timed.seconds, 2)
    out["results_per_event"] = round(sum(timed.results) / len(chosen), 3)
    out["plugin_seconds"] = {k: round(v, 3) for k, v in timed.plugin_seconds.items()}
    out["plugin_items"] = timed.plugin_items
    out["batch_sizes"] = {name: sizes.get(name, rt.policy.max_batch_size) for name, rt in runtimes.items()}
    out["decode_ms_per_event"] = round(1000 * selector.decode_seconds / max(selector.decoded, 1), 3)
    out["memory"]["peak_rss_mb"] = round(peak_rss_mb() or 0.0, 1)
    records = [replace(s.record, results=n) for s, n in zip(chosen, timed.results, strict=True)]
    out["workload"] = {"path": spec["workload"], "events": write_workload(Path(spec["workload"]), records)}


def _measure_rate(spec: Mapping[str, Any], out: dict[str, Any]) -> None:
    """One configuration of the fair compute limit: ``threads`` torch threads in this process,
    which is one of ``processes`` measured together. Each process loads and warms up, then
    waits at the barrier (``_barrier``) so that the timed windows overlap; each runs its
    own events (demo events from its own seed) through every plugin, concurrently as in
    the worker, for at least ``budget_s``."""
    import torch

    from streamproc.config import load_settings
    from streamproc.registry import build_router, load_plugins

    barrier = Path(spec["barrier"])
    try:
        settings = load_settings()
        runtimes, _ = load_plugins(settings)
        torch.set_num_threads(spec["threads"])
        plugins = spec["plugins"]
        missing = [n for n in plugins if n not in runtimes]
        if missing:
            out["error"] = f"plugins not loaded: {', '.join(missing)}"
            return
        router = build_router(settings, runtimes)
        single = len(plugins) == 1
        selector = EventSelector(
            runtimes, router, settings.limits.payload_limits(), single, seed=spec["seed"] + spec["index"]
        )
        selected = selector.take(spec["items"])
        threads = {name: PluginThread(runtimes[name]) for name in plugins}
        run_mix(threads, router, selected, spec["batch_sizes"])  # warm-up
    finally:
        (barrier / f"ready-{spec['index']}").touch()  # a failed process must not hold the others back
    _wait_for_go(barrier)
    events = 0
    started = time.perf_counter()
    while True:
        run_mix(threads, router, selected, spec["batch_sizes"])
        events += len(selected)
        elapsed = time.perf_counter() - started
        if elapsed >= spec["budget_s"]:
            break
    for thread in threads.values():
        thread.close()
    out.update(
        events=events,
        seconds=round(elapsed, 3),
        events_per_s=round(events / elapsed, 2),
        torch_threads=torch.get_num_threads(),
    )


def _wait_for_go(barrier: Path, timeout_s: float = 600.0) -> None:
    """Block until the orchestrator opens the barrier (creates ``go``)."""
    deadline = time.monotonic() + timeout_s
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {barrier} not opened within {timeout_s:.0f} s")
        time.sleep(0.02)


def _runtime_facts(runtime: Any) -> dict[str, Any]:
    import torch

    policy = runtime.policy
    return {
        "device": str(runtime.device),
        "dtype": runtime.dtype_name,
        "torch_threads": torch.get_num_threads(),
        "model_version": runtime.plugin.model_version,
        "policy": {"max_batch_size": policy.max_batch_size, "max_wait_ms": policy.max_wait_ms},
    }


def _run_size(events_per_s: float, spec: Mapping[str, Any]) -> int:
    """Events for a throughput run of about ``run_s`` seconds at the compute limit, within bounds."""
    return int(min(spec["events"], max(spec["min_events"], events_per_s * spec["run_s"])))


def main(argv: list[str] | None = None) -> int:
    spec_path, out_path = (argv or sys.argv[1:])[:2]
    spec = json.loads(Path(spec_path).read_text())
    out: dict[str, Any] = {"mode": spec["mode"], "plugins": spec["plugins"]}
    started = time.perf_counter()
    try:
        if spec["mode"] == "plugin":
            _measure_plugin(spec, out)
        elif spec["mode"] == "rate":
            _measure_rate(spec, out)
        else:
            _measure_mix(spec, out)
    except Exception as exc:  # reported to the orchestrator, which goes on with the other plugins
        out["error"] = f"{type(exc).__name__}: {exc}"
        import traceback

        traceback.print_exc()
    out["wall_s"] = round(time.perf_counter() - started, 2)
    Path(out_path).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
