"""``streamproc bench``: limits, the pipeline and two baselines, side by side in one run.

For each plugin under test, and for all of them together (the mixed workload), on one
machine, one stage after the other so that stages never compete:

1. compute limit: offline batched inference at the best of a sweep of batch sizes, in a
   fresh process per plugin (which also gives its memory after load and after a warm-up
   batch); it picks the workload, real demo events that carry work for the plugin
   (``streamproc.bench.compute``). Then the *fair* limit: the best of {1, N} torch
   threads x {1, N} processes at those batch sizes, every process computing at once
   (``_fair_limit``): what the hardware allows however the work is spread, which the
   targets compare the pipeline with;
2. transport limit: raw Kafka consume -> produce of the same messages, no model
   (``streamproc.bench.kafka``);
3. the pipeline: ``streamproc worker`` end to end, maximum throughput on a backlog, then
   latency at 50% and 90% of that maximum (``streamproc.bench.pipeline``);
4. the baselines: a naive Faust agent, one event at a time (``streamproc.bench.naive``),
   and a competent one, batches with ``stream.take()`` (``streamproc.bench.competent``).

Every stage records its ``load``: the CPU of processes that are none of the benchmark's,
in the seconds before the stage and during it; above ``--max-other-cores`` the stage is
invalid and the targets that use it say INVALID instead of PASS or MISS.

Sizes follow the measured compute limit (a throughput run lasts about ``run_s``
seconds, within ``--events``). CPU of the worker (and of its event-loop thread), Kafka,
Redis and the benchmark itself is charged from a sampler; peak memory is the kernel's
high-water mark. Results go to ``<out>/bench.json`` and ``latencies.json``, plots to
``throughput.png`` and ``latency_cdf.png``; targets (``streamproc.bench.report``) are
printed with PASS/MISS/INVALID. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from streamproc.bench.kafka import create_topics, preproduce, transport_limit
from streamproc.bench.pipeline import RunContext, measure_baseline, measure_pipeline, new_run_id, run_settings
from streamproc.bench.process import (
    ChildProcess,
    CpuSampler,
    ProcessCensus,
    listener_pid,
    load_average,
    machine_state,
)
from streamproc.bench.report import evaluate_targets, summary_text, write_plots
from streamproc.bench.workload import WorkloadRecord, read_workload
from streamproc.config import KafkaSettings, RedisSettings, Settings

MIXED = "mixed"
COMPUTE_TIMEOUT_S = 900.0
LOAD_WINDOW_S = 2.0
"""Seconds of machine CPU looked at before each stage (the machine must be quiet then too)."""
TRANSPORT_MAX_BYTES = 256 * 1024 * 1024


@dataclass
class BenchOptions:
    """Sizes and switches of one benchmark run (``--quick`` makes every size small)."""

    out: Path = Path("bench-results")
    events: int = 4000
    duration_s: float = 20.0
    plugins: list[str] | None = None
    quick: bool = False
    mixed: bool = True
    profile: bool = False
    workers: int = 1
    skip: frozenset[str] = frozenset()
    run_s: float = 15.0
    sweep_budget_s: float = 2.0
    naive_s: float = 20.0
    transport_min_events: int = 5000
    min_events: int = 100
    warmup_s: float = 2.0
    loads: tuple[float, ...] = (0.5, 0.9)
    seed: int = 7
    fair_budget_s: float = 3.0
    max_other_cores: float = 0.25

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchOptions:
        options = cls(
            out=args.out, quick=args.quick, mixed=not args.no_mixed, profile=args.profile, workers=max(1, args.workers)
        )
        if args.quick:
            options.events, options.duration_s, options.run_s = 300, 5.0, 3.0
            options.sweep_budget_s, options.naive_s, options.transport_min_events = 0.3, 4.0, 300
            options.min_events, options.warmup_s, options.fair_budget_s = 20, 0.5, 0.5
        if args.events is not None:
            options.events = args.events
            options.transport_min_events = min(options.transport_min_events, max(args.events, 100))
            options.min_events = min(options.min_events, args.events)
        if args.duration is not None:
            options.duration_s = args.duration
            options.warmup_s = min(options.warmup_s, args.duration / 4)
        if args.plugins:
            options.plugins = [p.strip() for p in args.plugins.split(",") if p.strip()]
        options.skip = frozenset(args.skip or ())
        if args.max_other_cores is not None:
            options.max_other_cores = args.max_other_cores
        return options


BENCH_PLUGIN_OPTIONS: dict[str, dict[str, Any]] = {"translator": {"backend": "gru"}}
"""The bench measures the product's own models: the translator's GRU network rather than
its default backend, Apertium's process pipeline. Configured options win."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_bench_command(settings: Settings, options: BenchOptions) -> int:
    """Resolve Kafka and Redis (the local stack unless configured), run, write, print.
    Configured addresses must answer first (else ``preflight.Unreachable``, one line)."""
    from streamproc import preflight
    from streamproc.dev.stack import LocalStack

    stack = None
    bootstrap, redis_url = settings.kafka.bootstrap, settings.redis.url
    if (
        bootstrap == KafkaSettings.model_fields["bootstrap"].default
        and redis_url == RedisSettings.model_fields["url"].default
    ):
        local = LocalStack()
        started = local.status() is None
        info = local.up(_say)
        bootstrap, redis_url = info.kafka_bootstrap, info.redis_url
        stack = local if started else None
    else:
        preflight.check_kafka_and_redis(settings)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the stack it started is stopped
    try:
        report = run_bench(settings, options, bootstrap, redis_url)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if stack is not None:
            stack.down()
    print(summary_text(report), end="")
    _say(f"results in {options.out}/: bench.json, latencies.json, " + ", ".join(report.get("plots") or []))
    return 0 if report["workloads"] else 1


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def with_bench_defaults(settings: Settings) -> Settings:
    """``settings`` with ``BENCH_PLUGIN_OPTIONS`` under each plugin's configured options."""
    plugins = dict(settings.plugins)
    for name, defaults in BENCH_PLUGIN_OPTIONS.items():
        current = settings.plugin(name)
        plugins[name] = current.model_copy(update={"options": {**defaults, **current.options}})
    return settings.model_copy(update={"plugins": plugins})


def run_bench(settings: Settings, options: BenchOptions, bootstrap: str, redis_url: str) -> dict[str, Any]:
    """Every stage for every workload; writes ``bench.json``, ``latencies.json`` and the plots."""
    from streamproc import registry

    settings = with_bench_defaults(settings)

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="streamproc-bench-"))
    _say("sampling the machine's load ...")
    report: dict[str, Any] = {
        "format": 1,
        "command": " ".join(["streamproc", *sys.argv[1:]]) if sys.argv else "streamproc bench",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": _git_revision(),
        "code": _code_locations(),
        "machine": {"start": machine_state()},
        "options": _options_dict(options),
        "endpoints": {"kafka": bootstrap, "redis": redis_url},
        "workloads": {},
    }
    discovered, failures = registry.discover()
    classes = {d.name: d.cls for d in discovered}
    wanted = options.plugins or [n for n in sorted(classes) if settings.plugin_enabled(n)]
    routes = {n: (tuple(settings.plugin(n).consumes or classes[n].consumes), classes[n].produces) for n in classes}
    for name in wanted:
        if name not in classes:
            reason = next((f.reason for f in failures if f.name == name), "not installed")
            report["workloads"][name] = {"kind": "plugin", "plugins": [name], "status": f"skipped: {reason}"}
    sampler = CpuSampler().start()
    sampler.watch("bench", os.getpid())
    kafka_pid = listener_pid(int(bootstrap.split(",")[0].rsplit(":", 1)[1]))
    redis_pid = listener_pid(_redis_port(redis_url))
    sampler.watch("kafka", kafka_pid)
    sampler.watch("redis", redis_pid)
    ctx = RunContext(settings, bootstrap, redis_url, logs, sampler, {n: c.produces for n, c in classes.items()}, _say)
    ctx.profile = options.profile
    ctx.known_pids = {os.getpid(), *(pid for pid in (kafka_pid, redis_pid) if pid)}
    latencies: dict[str, dict[str, list[float]]] = {}
    try:
        workloads: list[tuple[str, list[str]]] = [(n, [n]) for n in wanted if n in classes]
        for name, plugins in workloads:
            report["workloads"][name] = _compute_stage(ctx, options, scratch, name, plugins, None)
        ok = [n for n, _ in workloads if report["workloads"][n]["status"] == "ok"]
        sizes = {n: report["workloads"][n]["compute"]["best_batch_size"] for n in ok}
        if options.mixed and ok:
            report["workloads"][MIXED] = _compute_stage(ctx, options, scratch, MIXED, ok, sizes)
            workloads.append((MIXED, ok))
        for name, plugins in workloads:
            workload = report["workloads"][name]
            if workload["status"] == "ok" and "fair" not in options.skip:
                workload["compute"]["fair"] = _fair_limit(ctx, options, scratch, name, plugins, sizes)
        for name, plugins in workloads:
            workload = report["workloads"][name]
            if workload["status"] != "ok":
                continue
            records = read_workload(Path(workload["compute"]["workload"]["path"]))
            _kafka_stages(ctx, options, name, plugins, records, workload)
            latencies[name] = {
                load: phase.pop("samples_ms", [])
                for load, phase in ((workload.get("pipeline") or {}).get("latency") or {}).items()
            }
            _write(out, report, latencies)
    finally:
        sampler.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    report["memory"] = _memory(report["workloads"])
    report["targets"] = evaluate_targets(report["workloads"], routes)
    report["machine"]["end"] = {"load_average": load_average()}
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["plots"] = write_plots(report, latencies, out)
    _write(out, report, latencies)
    return report


def _compute_stage(
    ctx: RunContext,
    options: BenchOptions,
    scratch: Path,
    name: str,
    plugins: list[str],
    sizes: dict[str, int] | None,
) -> dict[str, Any]:
    """The compute limit in a fresh process; it also writes the workload for the later stages."""
    kind = "mixed" if sizes is not None else "plugin"
    _say(f"[{name}] compute limit ({'plugins ' + ', '.join(plugins) if sizes else 'batch-size sweep'}) ...")
    data, _ = run_settings(ctx, new_run_id(f"compute{name}"), plugins)
    spec = {
        "mode": kind,
        "plugins": plugins,
        "events": options.events,
        "min_events": options.min_events,
        "run_s": options.run_s,
        "budget_s": options.sweep_budget_s,
        "inprocess_s": max(1.0, options.run_s / 3),
        "quick": options.quick,
        "seed": options.seed,
        "batch_sizes": sizes,
        "workload": str(scratch / f"{name}.jsonl"),
    }
    spec_path, result_path = scratch / f"{name}-spec.json", scratch / f"{name}-compute.json"
    spec_path.write_text(json.dumps(spec))
    before = _other_cores_before(ctx)
    started = time.time()
    child = ChildProcess("streamproc.bench.compute", data, ctx.workdir, f"compute-{name}").start(
        [str(spec_path), str(result_path)]
    )
    ctx.sampler.watch("compute", child.pid)
    try:
        assert child.proc is not None
        child.proc.wait(timeout=COMPUTE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.stop(5)
    finally:
        during = ctx.sampler.usage(started, time.time(), ["compute", "kafka", "redis", "bench"]).get("other")
        ctx.sampler.watch("compute", None)
    workload: dict[str, Any] = {"kind": kind, "plugins": plugins}
    if not result_path.exists():
        workload["status"] = f"failed: compute stage wrote nothing (log {child.log_path})\n{child.log_tail(10)}"
        return workload
    compute = json.loads(result_path.read_text())
    workload["compute"] = compute
    compute["load"] = load_verdict(before, during, options.max_other_cores)
    if compute.get("error"):
        workload["status"] = f"skipped: {compute['error']}"
        _say(f"[{name}] skipped: {compute['error']}")
        return workload
    workload["status"] = "ok"
    best = f", best batch {compute['best_batch_size']}" if "best_batch_size" in compute else ""
    _say(f"[{name}] compute limit {compute['events_per_s']} events/s{best}; workload {compute['workload']['events']}")
    return workload


def fair_configurations(cores: int) -> list[tuple[int, int]]:
    """(torch threads, processes) pairs of the fair compute limit: {1, cores} x {1, cores}."""
    counts = sorted({1, max(1, cores)})
    return [(threads, processes) for threads in counts for processes in counts]


def _fair_limit(
    ctx: RunContext,
    options: BenchOptions,
    scratch: Path,
    name: str,
    plugins: list[str],
    sizes: dict[str, int],
) -> dict[str, Any]:
    """The compute limit the hardware allows however the work is spread: the best of
    {1, N} torch threads x {1, N} processes (N: the cores available), each configuration
    measured with every process computing at once (``compute._measure_rate``), at the
    batch sizes the sweep chose. The worker's own configuration is one of them."""
    from streamproc.engine.runtime import available_cores

    configs = []
    for threads, processes in fair_configurations(available_cores()):
        _say(f"[{name}] fair compute limit: {threads} torch thread(s) x {processes} process(es) ...")
        configs.append(_rate_config(ctx, options, scratch, name, plugins, sizes, threads, processes))
    measured = [c for c in configs if c.get("events_per_s")]
    best = max(measured, key=lambda c: c["events_per_s"], default=None)
    if best is not None:
        _say(f"[{name}] fair compute limit {best['events_per_s']} events/s ({best['threads']} x {best['processes']})")
    return {
        "configurations": configs,
        "events_per_s": best["events_per_s"] if best else None,
        "best": {"threads": best["threads"], "processes": best["processes"]} if best else None,
        "load": _worst_load([c["load"] for c in configs], options.max_other_cores),
    }


def _rate_config(
    ctx: RunContext,
    options: BenchOptions,
    scratch: Path,
    name: str,
    plugins: list[str],
    sizes: dict[str, int],
    threads: int,
    processes: int,
) -> dict[str, Any]:
    """``processes`` compute processes of ``threads`` torch threads each, timed together."""
    data, _ = run_settings(ctx, new_run_id(f"rate{name}"), plugins)
    barrier = Path(tempfile.mkdtemp(prefix=f"barrier-{name}-", dir=scratch))
    children: list[tuple[ChildProcess, Path]] = []
    before = _other_cores_before(ctx)
    for index in range(processes):
        spec = {
            "mode": "rate",
            "plugins": plugins,
            "threads": threads,
            "index": index,
            "seed": options.seed,
            "items": max(64, 4 * max(sizes.get(p, 1) for p in plugins)),
            "batch_sizes": sizes,
            "budget_s": options.fair_budget_s,
            "barrier": str(barrier),
        }
        spec_path, result_path = barrier / f"spec-{index}.json", barrier / f"result-{index}.json"
        spec_path.write_text(json.dumps(spec))
        label = f"rate-{name}-{threads}x{processes}-{index}"
        child = ChildProcess("streamproc.bench.compute", data, ctx.workdir, label)
        children.append((child.start([str(spec_path), str(result_path)]), result_path))
        ctx.sampler.watch(f"compute{index}", child.pid)
    names = ["kafka", "redis", "bench", *(f"compute{i}" for i in range(processes))]
    deadline = time.time() + COMPUTE_TIMEOUT_S
    while len(list(barrier.glob("ready-*"))) < processes and time.time() < deadline:
        if any(child.proc is not None and child.proc.poll() is not None for child, _ in children):
            break
        time.sleep(0.05)
    (barrier / "go").touch()
    opened = time.time()
    for child, _ in children:
        try:
            assert child.proc is not None
            child.proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            child.stop(5)
    during = ctx.sampler.usage(opened, time.time(), names).get("other")
    for index in range(processes):
        ctx.sampler.watch(f"compute{index}", None)
    results = [json.loads(path.read_text()) if path.exists() else {"error": "wrote nothing"} for _, path in children]
    errors = [r["error"] for r in results if r.get("error")]
    config: dict[str, Any] = {
        "threads": threads,
        "processes": processes,
        "each_events_per_s": [r.get("events_per_s") for r in results],
        "load": load_verdict(before, during, options.max_other_cores),
    }
    if errors:
        config["error"] = "; ".join(errors)
    else:
        config["events_per_s"] = round(sum(r["events_per_s"] for r in results), 2)
    return config


def _other_cores_before(ctx: RunContext) -> float:
    """Cores other processes use over ``LOAD_WINDOW_S`` seconds, just before a stage. The
    benchmark's own processes (Kafka, Redis, itself and every child, a previous stage's
    worker still exiting included) are not "other"."""
    earlier = ProcessCensus()
    time.sleep(LOAD_WINDOW_S)
    own = {*ctx.known_pids, *(child.pid for child in psutil.Process().children(recursive=True))}
    return ProcessCensus().cores_since(earlier, own)


def load_verdict(before: float | None, during: float | None, threshold: float) -> dict[str, Any]:
    """Whether a stage ran on a quiet enough machine: the CPU of processes that are none of
    the benchmark's, before and during the stage, both at most ``threshold`` cores."""
    worst = max((v for v in (before, during) if v is not None), default=None)
    return {
        "other_cores_before": before,
        "other_cores_during": during,
        "max_other_cores": threshold,
        "valid": worst is None or worst <= threshold,
    }


def _worst_load(loads: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    befores = [x["other_cores_before"] for x in loads if x["other_cores_before"] is not None]
    durings = [x["other_cores_during"] for x in loads if x["other_cores_during"] is not None]
    return load_verdict(max(befores, default=None), max(durings, default=None), threshold)


def _kafka_stages(
    ctx: RunContext,
    options: BenchOptions,
    name: str,
    plugins: list[str],
    records: list[WorkloadRecord],
    workload: dict[str, Any],
) -> None:
    """Transport, pipeline and the two baselines, each with its load verdict."""
    if "transport" not in options.skip:
        _say(f"[{name}] transport limit ...")
        before = _other_cores_before(ctx)
        try:
            workload["transport"] = _transport(ctx, options, name, records)
            _say(f"[{name}] transport {workload['transport'].get('events_per_s')} events/s")
        except Exception as exc:
            workload["transport"] = {"error": f"{type(exc).__name__}: {exc}"}
            _say(f"[{name}] transport failed: {exc}")
        _judge(workload["transport"], before, options)
    _say(f"[{name}] pipeline ({len(records)} events, {options.workers} worker process(es)) ...")
    before = _other_cores_before(ctx)
    try:
        workload["pipeline"] = measure_pipeline(
            ctx, name, plugins, records, options.loads, options.duration_s, options.warmup_s, options.workers
        )
    except Exception as exc:
        workload["pipeline"] = {"error": f"{type(exc).__name__}: {exc}"}
        _say(f"[{name}] pipeline failed: {exc}")
    pipeline = workload["pipeline"]
    for section in [pipeline.get("max") or {}, *(pipeline.get("latency") or {}).values()]:
        _judge(section, before, options)
    if "exactly_once" not in options.skip and ctx.settings.kafka.processing_guarantee != "exactly_once":
        _exactly_once_stage(ctx, options, name, plugins, records, workload)
    compute = workload["compute"]
    estimate = float(compute.get("batch1_events_per_s") or compute.get("events_per_s") or 1.0)
    for stage in ("naive", "competent"):
        if stage in options.skip:
            continue
        rate = estimate if stage == "naive" else float(compute.get("events_per_s") or estimate)
        count = int(min(len(records), max(options.min_events, rate * options.naive_s)))
        _say(f"[{name}] {stage} baseline ({count} events) ...")
        before = _other_cores_before(ctx)
        try:
            workload[stage] = measure_baseline(
                ctx, stage, name, plugins, records[:count], cap_s=2 * options.naive_s + 10
            )
        except Exception as exc:
            workload[stage] = {"error": f"{type(exc).__name__}: {exc}"}
            _say(f"[{name}] {stage} failed: {exc}")
        _judge(workload[stage], before, options)


def _exactly_once_stage(
    ctx: RunContext,
    options: BenchOptions,
    name: str,
    plugins: list[str],
    records: list[WorkloadRecord],
    workload: dict[str, Any],
) -> None:
    """The pipeline again under ``processing_guarantee: exactly_once``: what a transaction
    per publication batch costs, next to the at-least-once pipeline of the same run."""
    _say(f"[{name}] pipeline under exactly_once ...")
    kafka = ctx.settings.kafka.model_copy(update={"processing_guarantee": "exactly_once"})
    eos = replace(ctx, settings=ctx.settings.model_copy(update={"kafka": kafka}))
    before = _other_cores_before(ctx)
    try:
        workload["exactly_once"] = measure_pipeline(
            eos, name, plugins, records, options.loads, options.duration_s, options.warmup_s, options.workers
        )
    except Exception as exc:
        workload["exactly_once"] = {"error": f"{type(exc).__name__}: {exc}"}
        _say(f"[{name}] exactly_once pipeline failed: {exc}")
    section = workload["exactly_once"]
    for part in [section.get("max") or {}, *(section.get("latency") or {}).values()]:
        _judge(part, before, options)


def _judge(section: dict[str, Any], before: float | None, options: BenchOptions) -> None:
    """Record the load verdict of a Kafka stage from its own CPU accounting."""
    during = (section.get("cpu_cores") or {}).get("other")
    section["load"] = load_verdict(before, during, options.max_other_cores)
    if not section["load"]["valid"]:
        _say(f"  INVALID: other processes used {during} cores during, {before} before (max {options.max_other_cores})")


def _transport(ctx: RunContext, options: BenchOptions, name: str, records: list[WorkloadRecord]) -> dict[str, Any]:
    run_id = new_run_id(f"transport{name}")
    data, _ = run_settings(ctx, run_id, [])
    settings = Settings.model_validate(data)
    source, target = f"bench-{run_id}-transport-in", f"bench-{run_id}-transport-out"
    create_topics(settings.kafka, [source, target])
    copies: list[WorkloadRecord] = []
    size = 0
    while len(copies) < max(len(records), options.transport_min_events) and size < TRANSPORT_MAX_BYTES:
        record = records[len(copies) % len(records)]
        copies.append(record)
        size += len(record.value)
    preproduce(settings, copies, dict.fromkeys(("playback", "upload", "audio"), source))
    run = asyncio.run(
        transport_limit(
            settings.kafka, source, target, f"bench-{run_id}-transport", len(copies), settings.kafka.commit_interval_s
        )
    )
    summary = run.summary()
    summary["bytes"] = size
    if run.last_s > run.first_s:
        summary["cpu_cores"] = ctx.sampler.usage(run.first_s, run.last_s, ["bench", "kafka", "redis"])
    return summary


def _memory(workloads: dict[str, Any]) -> dict[str, Any]:
    """Per plugin alone (compute process; pipeline worker) and the worker with every plugin loaded."""
    per_plugin = {}
    for name, workload in workloads.items():
        if workload.get("kind") != "plugin" or workload.get("status") != "ok":
            continue
        pipeline = workload.get("pipeline") or {}
        per_plugin[name] = {
            **(workload["compute"].get("memory") or {}),
            "worker_rss_ready_mb": pipeline.get("rss_ready_mb"),
            "worker_peak_rss_mb": pipeline.get("peak_rss_mb"),
        }
    mixed = workloads.get(MIXED) or {}
    pipeline = mixed.get("pipeline") or {}
    return {
        "per_plugin": per_plugin,
        "all_plugins": {
            "plugins": mixed.get("plugins"),
            "offline_rss_loaded_mb": ((mixed.get("compute") or {}).get("memory") or {}).get("rss_loaded_mb"),
            "worker_rss_ready_mb": pipeline.get("rss_ready_mb"),
            "worker_peak_rss_mb": pipeline.get("peak_rss_mb"),
        },
    }


def _write(out: Path, report: dict[str, Any], latencies: dict[str, dict[str, list[float]]]) -> None:
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "latencies.json").write_text(json.dumps(latencies))


def _options_dict(options: BenchOptions) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()}


def _code_locations() -> dict[str, str]:
    """Where streamproc and each installed plugin were imported from (which tree was measured)."""
    from importlib.metadata import entry_points

    from streamproc import config  # not the package: with editable dev/bench installs it is a namespace

    found = {"streamproc": str(Path(config.__file__).resolve().parent)}
    for ep in entry_points(group="streamproc.plugins"):
        try:
            module = importlib.import_module(ep.module)
        except Exception:  # reported by discovery; here only locations matter
            continue
        found[ep.name] = str(Path(module.__file__ or "?").resolve().parent)
    return found


def _redis_port(url: str) -> int:
    from urllib.parse import urlparse

    return urlparse(url).port or 6379


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")
