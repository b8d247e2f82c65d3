"""The pipeline and the naive baseline, each a real process between the real Kafka and Redis.

The pipeline is ``streamproc worker`` with only the plugins under test enabled, on the
run's own topics, consumer group and Redis key prefix. Maximum throughput: a backlog of
N events is produced first, then the worker starts; the run ends when its ``/metrics``
show every event consumed and nothing in flight (every result acknowledged by both
sinks). Latency: with the same worker, a paced generator offers a fixed share of that
maximum for a fixed time while a reader notes when each result shows up on Kafka and
in Redis. The naive baseline (``streamproc.bench_naive``) gets the same backlog
treatment; its rate is read from its output topic (it has no metrics).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamproc.bench_kafka import ResultReader, create_topics, paced_produce, preproduce
from streamproc.bench_process import ChildProcess, CpuSampler, ProcessCensus, Profile, peak_rss_mb, rss_mb
from streamproc.bench_stats import histogram_counts, histogram_quantile, steady_rate, subtract_buckets
from streamproc.bench_workload import WorkloadRecord
from streamproc.config import KafkaSettings, Settings
from streamproc.stack import _free_ports

READY_TIMEOUT_S = 300.0
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Say = Callable[[str], None]


@dataclass
class RunContext:
    """What every pipeline and naive run shares: base settings, endpoints, a workdir, the CPU sampler."""

    settings: Settings
    bootstrap: str
    redis_url: str
    workdir: Path
    sampler: CpuSampler
    produces: Mapping[str, str]
    say: Say
    profile: bool = False
    known_pids: set[int] = field(default_factory=set)

    def others(self, earlier: ProcessCensus, *children: ChildProcess) -> list[dict[str, Any]]:
        """The busiest processes that are none of the benchmark's since ``earlier``."""
        known = self.known_pids | {c.pid for c in children if c.proc is not None}
        return ProcessCensus().busiest_since(earlier, known)


@dataclass(frozen=True)
class RunTopics:
    inputs: dict[str, str]
    outputs: list[str]
    feeds: list[str]
    dead_letters: str

    def all(self) -> list[str]:
        return sorted({*self.inputs.values(), *self.outputs, self.dead_letters})


def run_settings(ctx: RunContext, run_id: str, plugins: Sequence[str]) -> tuple[dict[str, Any], RunTopics]:
    """Settings (plain YAML data, secrets kept) for one run: its own topics, group, key prefix, port."""
    data = ctx.settings.model_dump(mode="json")
    for section, key in (("kafka", "sasl_password"), ("redis", "password")):
        secret = getattr(getattr(ctx.settings, section), key)
        data[section][key] = secret.get_secret_value() if secret is not None else None
    prefix = f"bench-{run_id}-"
    data["app_id"] = f"bench-{run_id}"
    data["kafka"].update(
        bootstrap=ctx.bootstrap,
        consumer_group=None,
        input_topics={t: f"{prefix}{t}" for t in ("playback", "upload", "audio")},
        output_topic_prefix=prefix,
        dead_letter_topic=f"{prefix}dead-letters",
    )
    data["redis"].update(url=ctx.redis_url, key_prefix=f"bench:{run_id}:")
    data["http"].update(bind="127.0.0.1", port=_free_ports(1)[0])
    data["enabled_plugins"] = list(plugins)
    run = Settings.model_validate(data)
    outputs = [run.plugin(n).output_topic or f"{prefix}{ctx.produces[n]}" for n in plugins]
    feeds = sorted({f"bench:{run_id}:feed:{ctx.produces[n]}" for n in plugins})
    return data, RunTopics(dict(run.kafka.input_topics), outputs, feeds, run.kafka.dead_letter_topic)


def new_run_id(label: str) -> str:
    return f"{re.sub(r'[^a-z0-9]+', '', label.lower())[:12]}-{uuid.uuid4().hex[:6]}"


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition -> ``(name, labels, value)`` samples."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def metric_total(samples: Sequence[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def metric_buckets(
    samples: Sequence[tuple[str, dict[str, str], float]], name: str, **labels: str
) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets ``(le, count)`` summed over label sets matching ``labels``."""
    sums: dict[float, float] = {}
    for n, lab, value in samples:
        if n == f"{name}_bucket" and all(lab.get(k) == x for k, x in labels.items()):
            le = float(lab["le"])
            sums[le] = sums.get(le, 0.0) + value
    return sorted(sums.items())


async def scrape(port: int) -> list[tuple[str, dict[str, str], float]] | None:
    """The worker's /metrics, parsed; ``None`` while it does not answer."""

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                return answer.read().decode()
        except OSError:
            return None

    text = await asyncio.to_thread(fetch)
    return parse_metrics(text) if text is not None else None


def _batch_shape(after: Sequence[Any], before: Sequence[Any] | None, plugins: Sequence[str]) -> dict[str, Any]:
    """Batch-size distribution per plugin between two scrapes."""
    out: dict[str, Any] = {}
    for name in plugins:
        now = metric_buckets(after, "streamproc_batch_size", plugin=name)
        then = metric_buckets(before, "streamproc_batch_size", plugin=name) if before else []
        window = subtract_buckets(now, then)
        count = metric_total(after, "streamproc_batch_size_count", plugin=name) - (
            metric_total(before, "streamproc_batch_size_count", plugin=name) if before else 0.0
        )
        total = metric_total(after, "streamproc_batch_size_sum", plugin=name) - (
            metric_total(before, "streamproc_batch_size_sum", plugin=name) if before else 0.0
        )
        infer = metric_total(after, "streamproc_inference_seconds_sum", plugin=name) - (
            metric_total(before, "streamproc_inference_seconds_sum", plugin=name) if before else 0.0
        )
        out[name] = {
            "batches": int(count),
            "mean": round(total / count, 2) if count else None,
            "p50_bucket": histogram_quantile(window, 0.5),
            "p99_bucket": histogram_quantile(window, 0.99),
            "distribution": [b for b in histogram_counts(window) if b["count"]],
            "batch_seconds_total": round(infer, 3),
            "batch_ms_mean": round(1000 * infer / count, 2) if count else None,
        }
    return out


def _publish_shape(after: Sequence[Any], before: Sequence[Any] | None) -> dict[str, Any]:
    def diff(name: str) -> float:
        return metric_total(after, name) - (metric_total(before, name) if before else 0.0)

    count = diff("streamproc_publish_seconds_count")
    return {
        "writes": int(count),
        "ms_mean": round(1000 * diff("streamproc_publish_seconds_sum") / count, 2) if count else None,
        "sink_failures": int(diff("streamproc_sink_failures_total")),
    }


def _cpu(ctx: RunContext, t0: float, t1: float, names: list[str]) -> dict[str, float]:
    return ctx.sampler.usage(t0, t1, names)


def measure_pipeline(
    ctx: RunContext,
    label: str,
    plugins: Sequence[str],
    records: Sequence[WorkloadRecord],
    loads: Sequence[float],
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """Maximum throughput, then latency at ``loads`` x that maximum, of one worker process."""
    run_id = new_run_id(label)
    data, topics = run_settings(ctx, run_id, plugins)
    settings = Settings.model_validate(data)
    create_topics(settings.kafka, topics.all())
    ctx.say(f"  pipeline: producing a backlog of {len(records)} events")
    preproduce(settings, records, topics.inputs)
    worker = ChildProcess("streamproc", data, ctx.workdir, f"worker-{run_id}")
    try:
        return asyncio.run(_pipeline(ctx, worker, settings, topics, plugins, records, loads, duration_s, warmup_s))
    finally:
        worker.stop()
        ctx.sampler.watch("worker", None)


async def _pipeline(
    ctx: RunContext,
    worker: ChildProcess,
    settings: Settings,
    topics: RunTopics,
    plugins: Sequence[str],
    records: Sequence[WorkloadRecord],
    loads: Sequence[float],
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    port = settings.http.port
    expected = {r.event_id: r.results for r in records}
    reader = await ResultReader(settings.kafka, topics.outputs, None, []).start()
    worker.start(["worker"])
    ctx.sampler.watch("worker", worker.pid)
    out: dict[str, Any] = {"run_id": settings.app_id, "events": len(records), "plugins": list(plugins)}
    try:
        t_before, t_start, first = await _wait_consuming(worker, port)
        census = ProcessCensus()
        out["rss_ready_mb"] = round(first, 1)
        out["start_uncertainty_s"] = round(t_start - t_before, 3)
        profile = None
        if ctx.profile:
            profile = Profile(worker.pid, ctx.workdir / f"profile-{settings.app_id}.txt", duration_s=120)
        t_done, final = await _wait_drained(worker, port, len(records), ctx.say)
        if profile is not None:
            out["profile"] = profile.finish()
        await reader.wait_for(expected, timeout_s=30)
        done = reader.completions(expected)
        times = sorted(done.values())
        t_mid = (t_before + t_start) / 2
        whole = len(records) / (t_done - t_mid) if t_done > t_mid else None
        steady = steady_rate(times)
        rate = whole or steady
        window = (t_mid, t_done)
        out["max"] = {
            "events_per_s": round(rate, 2) if rate else None,
            "rate_basis": "first event consumed to all acknowledged (/metrics)" if whole else "steady (reader)",
            "steady_events_per_s": round(steady, 2) if steady else None,
            "seconds": round(t_done - t_mid, 3),
            "completed_events": len(done),
            "results": int(metric_total(final, "streamproc_results_total")),
            "dead_letters": int(metric_total(final, "streamproc_dead_letters_total")),
            "batch_sizes": _batch_shape(final, None, plugins),
            "publish": _publish_shape(final, None),
            "cpu_cores": _cpu(ctx, window[0], window[1], ["worker", "kafka", "redis", "bench"]),
            "other_processes": ctx.others(census, worker),
        }
        await reader.stop()
        ctx.say(
            f"  pipeline max: {out['max']['events_per_s']} events/s ({out['max']['steady_events_per_s']} steady "
            f"10-90%; {len(done)}/{len(records)} events complete)"
        )
        out["latency"] = {}
        for load in loads if rate else ():
            out["latency"][f"{round(load * 100)}"] = await _paced_phase(
                ctx, worker, settings, topics, plugins, records, load, load * rate, duration_s, warmup_s
            )
        out["peak_rss_mb"] = round(peak_rss_mb(worker.pid) or 0.0, 1)
        out["rss_end_mb"] = round(rss_mb(worker.pid), 1)
    finally:
        await reader.stop()
        stopped = time.time()
        out["exit_status"] = await asyncio.to_thread(worker.stop)
        out["stop_seconds"] = round(time.time() - stopped, 2)
    return out


async def _wait_consuming(worker: ChildProcess, port: int) -> tuple[float, float, float]:
    """Poll until the worker consumed its first event: (last time with none, first time with some, RSS then)."""
    deadline = time.time() + READY_TIMEOUT_S
    before = time.time()
    rss_ready = 0.0
    while time.time() < deadline:
        if not worker.alive():
            raise RuntimeError(f"worker exited during start-up:\n{worker.log_tail()}")
        samples = await scrape(port)
        now = time.time()
        if samples is not None:
            if not rss_ready:
                rss_ready = rss_mb(worker.pid)
            consumed = metric_total(samples, "streamproc_events_consumed_total") + metric_total(
                samples, "streamproc_events_invalid_total"
            )
            if consumed > 0:
                return before, now, rss_ready
        before = now
        await asyncio.sleep(0.05)
    raise RuntimeError(f"worker consumed nothing within {READY_TIMEOUT_S:.0f} s:\n{worker.log_tail()}")


async def _wait_drained(
    worker: ChildProcess, port: int, count: int, say: Say, stall_s: float = 90.0
) -> tuple[float, Any]:
    """Poll until ``count`` events were consumed and none is in flight; (time, final scrape)."""
    last_progress, last_handled, last_said = time.time(), -1.0, 0.0
    while True:
        if not worker.alive():
            raise RuntimeError(f"worker exited during the run:\n{worker.log_tail()}")
        samples = await scrape(port)
        now = time.time()
        if samples is not None:
            handled = metric_total(samples, "streamproc_events_consumed_total") + metric_total(
                samples, "streamproc_events_invalid_total"
            )
            in_flight = metric_total(samples, "streamproc_in_flight_events")
            if handled >= count and in_flight == 0:
                return now, samples
            if handled != last_handled:
                last_handled, last_progress = handled, now
            elif now - last_progress > stall_s:
                raise RuntimeError(f"no progress for {stall_s:.0f} s at {handled:.0f}/{count} events")
            if now - last_said > 5:
                say(f"  pipeline: {handled - in_flight:.0f}/{count} events acknowledged")
                last_said = now
        await asyncio.sleep(0.25)


async def _paced_phase(
    ctx: RunContext,
    worker: ChildProcess,
    settings: Settings,
    topics: RunTopics,
    plugins: Sequence[str],
    records: Sequence[WorkloadRecord],
    load: float,
    rate: float,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    ctx.say(f"  latency at {load:.0%} of the maximum: {rate:.1f} events/s for {duration_s:.0f} s")
    reader = await ResultReader(settings.kafka, topics.outputs, ctx.redis_url, topics.feeds).start(from_end=True)
    try:
        before = await scrape(settings.http.port)
        census = ProcessCensus()
        started = time.time()
        label = f"l{round(load * 100)}-"
        sent = await paced_produce(settings.kafka, records, topics.inputs, rate, duration_s, label)
        sent_until = time.time()
        others = ctx.others(census, worker)
        expected = {s.event_id: s.results for s in sent}
        complete = await reader.wait_for(expected, timeout_s=duration_s + 120)
        after = await scrape(settings.http.port)
        latency = reader.latency(sent, since_ms=int((started + warmup_s) * 1000))
    finally:
        await reader.stop()
    achieved = len(sent) / (sent_until - started) if sent_until > started else None
    return {
        "offered_events_per_s": round(rate, 2),
        "achieved_send_rate": round(achieved, 2) if achieved else None,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "sent": len(sent),
        "all_completed": complete,
        **latency,
        "batch_sizes": _batch_shape(after or [], before, plugins),
        "publish": _publish_shape(after or [], before),
        "cpu_cores": _cpu(ctx, started, sent_until, ["worker", "kafka", "redis", "bench"]),
        "other_processes": others,
    }


def measure_naive(
    ctx: RunContext, label: str, plugins: Sequence[str], records: Sequence[WorkloadRecord], cap_s: float
) -> dict[str, Any]:
    """The naive baseline's throughput on a backlog of ``records`` (at most ``cap_s`` seconds)."""
    run_id = new_run_id(f"naive{label}")
    data, topics = run_settings(ctx, run_id, plugins)
    settings = Settings.model_validate(data)
    create_topics(settings.kafka, topics.all())
    ctx.say(f"  naive: producing a backlog of {len(records)} events")
    preproduce(settings, records, topics.inputs)
    app = ChildProcess("streamproc.bench_naive", data, ctx.workdir, f"naive-{run_id}")
    try:
        return asyncio.run(_naive(ctx, app, settings.kafka, topics, records, cap_s))
    finally:
        app.stop()
        ctx.sampler.watch("naive", None)


async def _naive(
    ctx: RunContext,
    app: ChildProcess,
    kafka: KafkaSettings,
    topics: RunTopics,
    records: Sequence[WorkloadRecord],
    cap_s: float,
) -> dict[str, Any]:
    expected = {r.event_id: r.results for r in records if r.results > 0}
    reader = await ResultReader(kafka, topics.outputs, None, []).start()
    app.start()
    ctx.sampler.watch("naive", app.pid)
    try:
        deadline = time.time() + READY_TIMEOUT_S
        while not reader.kafka_seen:
            if not app.alive():
                raise RuntimeError(f"naive baseline exited:\n{app.log_tail()}")
            if time.time() > deadline:
                raise RuntimeError(f"naive baseline published nothing within {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
        first = time.time()
        census = ProcessCensus()
        last_said = 0.0
        while time.time() - first < cap_s and app.alive():
            done = len(reader.completions(expected))
            if done >= len(expected):
                break
            if time.time() - last_said > 5:
                ctx.say(f"  naive: {done}/{len(expected)} events done")
                last_said = time.time()
            await asyncio.sleep(0.25)
        completions = sorted(reader.completions(expected).values())
        steady = steady_rate(completions)
        span = completions[-1] - completions[0] if len(completions) > 1 else 0.0
        rate = (len(completions) - 1) / span if span > 0 else None
        window = (completions[0], completions[-1]) if len(completions) > 1 else (first, time.time())
        out = {
            "events": len(records),
            "completed_events": len(completions),
            "capped": len(completions) < len(expected),
            "events_per_s": round(rate, 2) if rate else None,
            "rate_basis": "first to last event complete (output topic)",
            "steady_events_per_s": round(steady, 2) if steady else None,
            "cpu_cores": _cpu(ctx, window[0], window[1], ["naive", "kafka", "redis", "bench"]),
            "other_processes": ctx.others(census, app),
            "peak_rss_mb": round(peak_rss_mb(app.pid) or 0.0, 1),
        }
        ctx.say(f"  naive: {out['events_per_s']} events/s ({len(completions)}/{len(expected)} events)")
        return out
    finally:
        await reader.stop()
