"""The pipeline and the baselines, each a real process between the real Kafka and Redis.

The pipeline is ``streamproc worker`` with only the plugins under test enabled, on the
run's own topics, consumer group and Redis key prefix. Maximum throughput: a backlog of
N events is produced first, then the worker starts; the run ends when its ``/metrics``
show every event consumed and nothing in flight (every result acknowledged by both
sinks). Latency: with the same worker, a paced generator offers a fixed share of that
maximum for a fixed time while a reader notes when each result shows up on Kafka and
in Redis. The naive and competent baselines (``streamproc.bench.naive``,
``streamproc.bench.competent``) get the same backlog treatment; their rate is read from
their output topics (they have no metrics).
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamproc.bench.kafka import ResultReader, create_topics, paced_produce, preproduce
from streamproc.bench.process import ChildProcess, CpuSampler, ProcessCensus, Profile, peak_rss_mb, rss_mb
from streamproc.bench.stats import histogram_counts, histogram_quantile, steady_rate, subtract_buckets
from streamproc.bench.workload import WorkloadRecord
from streamproc.config import KafkaSettings, Settings
from streamproc.dev.stack import free_ports
from streamproc.engine.keys import RedisKeys

READY_TIMEOUT_S = 300.0
PHASE_SLACK_S = 300.0
"""A paced phase is given up this long after its warm-up and duration (results wait 120 s)."""
GROUP_SETTLE_S = 30.0
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
    data["http"].update(bind="127.0.0.1", port=free_ports(1)[0])
    data["enabled_plugins"] = list(plugins)
    run = Settings.model_validate(data)
    outputs = [run.plugin(n).output_topic or f"{prefix}{ctx.produces[n]}" for n in plugins]
    feeds = sorted({RedisKeys(run.redis.key_prefix).feed(ctx.produces[n]) for n in plugins})
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


def _publish_shape(after: Sequence[Any], before: Sequence[Any] | None, seconds: float) -> dict[str, Any]:
    """Publication batches between two scrapes over ``seconds``. One batch is one partition's
    write to both sinks; under exactly_once it is one Kafka transaction, so ``records_per_write``
    is the transaction size and ``writes_per_s`` the commit rate."""

    def diff(name: str) -> float:
        return metric_total(after, name) - (metric_total(before, name) if before else 0.0)

    count = diff("streamproc_publish_seconds_count")
    records = diff("streamproc_events_consumed_total") + diff("streamproc_events_invalid_total")
    return {
        "writes": int(count),
        "ms_mean": round(1000 * diff("streamproc_publish_seconds_sum") / count, 2) if count else None,
        "records_per_write": round(records / count, 2) if count else None,
        "writes_per_s": round(count / seconds, 2) if seconds > 0 else None,
        "sink_failures": int(diff("streamproc_sink_failures_total")),
    }


def _intake_shape(after: Sequence[Any]) -> dict[str, Any]:
    """The engine's intake passes over the run: how many records it decoded and routed together."""
    count = metric_total(after, "streamproc_intake_batch_records_count")
    records = metric_total(after, "streamproc_intake_batch_records_sum")
    return {"passes": int(count), "records_mean": round(records / count, 1) if count else None}


def _cpu(ctx: RunContext, t0: float, t1: float, names: list[str]) -> dict[str, float]:
    """Cores per process over a window; ``worker``: every worker process together."""
    usage = ctx.sampler.usage(t0, t1, names)
    workers = [v for k, v in usage.items() if k.startswith("worker")]
    if workers:
        usage["worker"] = round(sum(workers), 3)
    return usage


def _loop_ms_per_event(cores: Mapping[str, float], seconds: float, events: int) -> float | None:
    """CPU milliseconds the workers' event-loop threads spent per event."""
    loops = [v for k, v in cores.items() if k.startswith("loop")]
    if not loops or events <= 0:
        return None
    return round(1000 * sum(loops) * seconds / events, 4)


class WorkerGroup:
    """``count`` ``streamproc worker`` processes in one consumer group (scale-out as in production)."""

    def __init__(self, data: Mapping[str, Any], workdir: Path, run_id: str, count: int) -> None:
        self.members: list[tuple[ChildProcess, int]] = []
        for index in range(count):
            member = copy.deepcopy(dict(data))
            if index:
                member["http"]["port"] = free_ports(1)[0]
            name = f"worker-{run_id}" + (f"-{index}" if count > 1 else "")
            self.members.append((ChildProcess("streamproc", member, workdir, name), member["http"]["port"]))

    def start(self, sampler: CpuSampler) -> None:
        for index, (child, _) in enumerate(self.members):
            child.start(["worker"])
            sampler.watch(f"worker{index}", child.pid, with_children=True)  # model processes included
            sampler.watch_thread(f"loop{index}", child.pid)  # the event loop runs on the main thread

    @property
    def children(self) -> list[ChildProcess]:
        return [child for child, _ in self.members]

    def check_alive(self, when: str) -> None:
        for child in self.children:
            if not child.alive():
                raise RuntimeError(f"worker exited {when}:\n{child.log_tail()}")

    async def scrape_each(self) -> list[list[tuple[str, dict[str, str], float]] | None]:
        return [await scrape(port) for _, port in self.members]

    async def scrape(self) -> list[tuple[str, dict[str, str], float]] | None:
        """Every member's /metrics together (sums over the group); ``None`` while one does not answer."""
        each = await self.scrape_each()
        if any(one is None for one in each):
            return None
        return [sample for one in each if one is not None for sample in one]

    def rss_mb(self) -> float:
        return sum(rss_mb(child.pid) for child in self.children)

    def peak_rss_mb(self) -> list[float]:
        return [round(peak_rss_mb(child.pid) or 0.0, 1) for child in self.children]

    def stop(self, sampler: CpuSampler) -> list[int | None]:
        codes = [child.stop() for child in self.children]
        for index in range(len(self.members)):
            sampler.watch(f"worker{index}", None)
            sampler.watch_thread(f"loop{index}", None)
        return codes


def measure_pipeline(
    ctx: RunContext,
    label: str,
    plugins: Sequence[str],
    records: Sequence[WorkloadRecord],
    loads: Sequence[float],
    duration_s: float,
    warmup_s: float,
    workers: int = 1,
) -> dict[str, Any]:
    """Maximum throughput, then latency at ``loads`` x that maximum, of ``workers`` worker processes.

    The backlog is produced first, then the workers start (so they fetch at full speed
    from their first poll). With several workers, the first to join the group consumes
    alone until the others are assigned partitions; the rate is then counted from the
    moment every worker has consumed (the group's first rebalances left out).
    """
    run_id = new_run_id(label)
    data, topics = run_settings(ctx, run_id, plugins)
    settings = Settings.model_validate(data)
    create_topics(settings.kafka, topics.all())
    group = WorkerGroup(data, ctx.workdir, run_id, workers)
    try:
        return asyncio.run(_pipeline(ctx, group, settings, topics, plugins, records, loads, duration_s, warmup_s))
    finally:
        group.stop(ctx.sampler)


async def _pipeline(
    ctx: RunContext,
    group: WorkerGroup,
    settings: Settings,
    topics: RunTopics,
    plugins: Sequence[str],
    records: Sequence[WorkloadRecord],
    loads: Sequence[float],
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    expected = {r.event_id: r.results for r in records}
    ctx.say(f"  pipeline: producing a backlog of {len(records)} events")
    await asyncio.to_thread(preproduce, settings, records, topics.inputs)
    reader = await ResultReader(settings.kafka, topics.outputs, None, []).start()
    launched = time.time()
    group.start(ctx.sampler)
    members = range(len(group.members))
    names = ["kafka", "redis", "bench", *(f"worker{i}" for i in members), *(f"loop{i}" for i in members)]
    out: dict[str, Any] = {
        "run_id": settings.app_id,
        "workers": len(group.members),
        "events": len(records),
        "plugins": list(plugins),
    }
    try:
        t_before, t_start, first, acked_before = await _wait_consuming(group)
        out["rss_ready_mb"] = round(first, 1)
        out["cold_start_s"] = round(t_start - launched, 2)  # process start to its first event consumed
        out["start_uncertainty_s"] = round(t_start - t_before, 3)
        census = ProcessCensus()
        profile = None
        if ctx.profile:
            target = group.children[0]
            profile = Profile(target.pid, ctx.workdir / f"profile-{settings.app_id}.txt", duration_s=120, gil=True)
        t_done, final = await _wait_drained(group, len(records), ctx.say)
        if profile is not None:
            out["profile"] = profile.finish()
        await reader.wait_for(expected, timeout_s=30)
        done = reader.completions(expected)
        times = sorted(done.values())
        t_mid = (t_before + t_start) / 2
        counted = len(records) - acked_before
        whole = counted / (t_done - t_mid) if t_done > t_mid and counted > 0 else None
        steady = steady_rate(times)
        rate = whole or steady
        basis = "first event consumed" if len(group.members) == 1 else "every worker consuming"
        out["max"] = {
            "events_per_s": round(rate, 2) if rate else None,
            "rate_basis": f"{basis} to all acknowledged (/metrics)" if whole else "steady (reader)",
            "counted_events": counted,
            "steady_events_per_s": round(steady, 2) if steady else None,
            "seconds": round(t_done - t_mid, 3),
            "completed_events": len(done),
            "results": int(metric_total(final, "streamproc_results_total")),
            "dead_letters": int(metric_total(final, "streamproc_dead_letters_total")),
            "batch_sizes": _batch_shape(final, None, plugins),
            "publish": _publish_shape(final, None, t_done - t_mid),
            "intake": _intake_shape(final),
            "cpu_cores": _cpu(ctx, t_mid, t_done, names),
            "other_processes": ctx.others(census, *group.children),
        }
        out["max"]["loop_ms_per_event"] = _loop_ms_per_event(out["max"]["cpu_cores"], t_done - t_mid, counted)
        model_rss = {
            plugin: round(metric_total(final, "streamproc_model_process_resident_bytes", plugin=plugin) / 1e6, 1)
            for plugin in plugins
        }
        if any(model_rss.values()):
            out["model_process_rss_mb"] = model_rss  # beside the worker's own rss_ready_mb / peak_rss_mb
        await reader.stop()
        ctx.say(
            f"  pipeline max: {out['max']['events_per_s']} events/s ({out['max']['steady_events_per_s']} steady "
            f"10-90%; {len(done)}/{len(records)} events complete; {out['max']['intake']['records_mean']} records "
            "per intake pass)"
        )
        out["latency"] = {}
        for load in loads if rate else ():
            phase = _paced_phase(
                ctx, group, names, settings, topics, plugins, records, load, load * rate, duration_s, warmup_s
            )
            bound_s = warmup_s + duration_s + PHASE_SLACK_S
            try:
                out["latency"][f"{round(load * 100)}"] = await asyncio.wait_for(phase, bound_s)
            except TimeoutError:  # a stuck client or a lost broker must not hang the whole run
                out["latency"][f"{round(load * 100)}"] = {"error": f"the phase did not finish within {bound_s:.0f} s"}
                ctx.say(f"  latency at {load:.0%}: did not finish within {bound_s:.0f} s")
        peaks = group.peak_rss_mb()
        out["peak_rss_mb"] = max(peaks)
        if len(peaks) > 1:
            out["peak_rss_mb_each"] = peaks
        out["rss_end_mb"] = round(group.rss_mb(), 1)
    finally:
        await reader.stop()
        stopped = time.time()
        out["exit_status"] = await asyncio.to_thread(group.stop, ctx.sampler)
        out["stop_seconds"] = round(time.time() - stopped, 2)
    return out


async def _wait_consuming(group: WorkerGroup) -> tuple[float, float, float, float]:
    """Poll until every worker consumed: (last time before, first time after, RSS then, events acked then).

    "Acked" is consumed minus in flight, summed over the group: the events done before
    the window opens, left out of the rate.
    """
    deadline = time.time() + READY_TIMEOUT_S
    before = time.time()
    rss_ready = 0.0
    first_seen: float | None = None
    while time.time() < deadline:
        group.check_alive("during start-up")
        each = await group.scrape_each()
        now = time.time()
        if all(one is not None for one in each):
            if not rss_ready:
                rss_ready = group.rss_mb()
            handled = [
                metric_total(one, "streamproc_events_consumed_total")
                + metric_total(one, "streamproc_events_invalid_total")
                for one in each
                if one is not None
            ]
            if any(h > 0 for h in handled) and first_seen is None:
                first_seen = now
            # a worker left without partitions (more workers than partitions) never consumes
            if all(h > 0 for h in handled) or (first_seen is not None and now - first_seen > GROUP_SETTLE_S):
                in_flight = sum(metric_total(one, "streamproc_in_flight_events") for one in each if one is not None)
                acked = sum(handled) - in_flight if len(each) > 1 else 0.0
                return before, now, rss_ready, acked
        before = now
        await asyncio.sleep(0.05)
    raise RuntimeError(f"workers did not all consume within {READY_TIMEOUT_S:.0f} s")


async def _wait_drained(group: WorkerGroup, count: int, say: Say, stall_s: float = 90.0) -> tuple[float, Any]:
    """Poll until ``count`` events were consumed and none is in flight; (time, final scrape)."""
    last_progress, last_handled, last_said = time.time(), -1.0, 0.0
    while True:
        group.check_alive("during the run")
        samples = await group.scrape()
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
    group: WorkerGroup,
    names: list[str],
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
        before = await group.scrape()
        census = ProcessCensus()
        started = time.time()
        label = f"l{round(load * 100)}-"
        sent = await paced_produce(settings.kafka, records, topics.inputs, rate, duration_s, label)
        sent_until = time.time()
        others = ctx.others(census, *group.children)
        expected = {s.event_id: s.results for s in sent}
        complete = await reader.wait_for(expected, timeout_s=duration_s + 120)
        after = await group.scrape()
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
        "publish": _publish_shape(after or [], before, time.time() - started),
        "cpu_cores": _cpu(ctx, started, sent_until, names),
        "other_processes": others,
    }


def measure_baseline(
    ctx: RunContext,
    stage: str,
    label: str,
    plugins: Sequence[str],
    records: Sequence[WorkloadRecord],
    cap_s: float,
) -> dict[str, Any]:
    """A baseline's throughput on a backlog of ``records`` (at most ``cap_s`` seconds):
    ``stage`` ``naive`` or ``competent``, the module ``streamproc.bench.<stage>``."""
    run_id = new_run_id(f"{stage}{label}")
    data, topics = run_settings(ctx, run_id, plugins)
    settings = Settings.model_validate(data)
    create_topics(settings.kafka, topics.all())
    ctx.say(f"  {stage}: producing a backlog of {len(records)} events")
    preproduce(settings, records, topics.inputs)
    app = ChildProcess(f"streamproc.bench.{stage}", data, ctx.workdir, f"{stage}-{run_id}")
    try:
        return asyncio.run(_baseline(ctx, stage, app, settings.kafka, topics, records, cap_s))
    finally:
        app.stop()
        ctx.sampler.watch(stage, None)


async def _baseline(
    ctx: RunContext,
    stage: str,
    app: ChildProcess,
    kafka: KafkaSettings,
    topics: RunTopics,
    records: Sequence[WorkloadRecord],
    cap_s: float,
) -> dict[str, Any]:
    expected = {r.event_id: r.results for r in records if r.results > 0}
    reader = await ResultReader(kafka, topics.outputs, None, []).start()
    app.start()
    ctx.sampler.watch(stage, app.pid)
    try:
        deadline = time.time() + READY_TIMEOUT_S
        while not reader.kafka_seen:
            if not app.alive():
                raise RuntimeError(f"{stage} baseline exited:\n{app.log_tail()}")
            if time.time() > deadline:
                raise RuntimeError(f"{stage} baseline published nothing within {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
        first = time.time()
        census = ProcessCensus()
        last_said = 0.0
        while time.time() - first < cap_s and app.alive():
            done = len(reader.completions(expected))
            if done >= len(expected):
                break
            if time.time() - last_said > 5:
                ctx.say(f"  {stage}: {done}/{len(expected)} events done")
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
            "cpu_cores": _cpu(ctx, window[0], window[1], [stage, "kafka", "redis", "bench"]),
            "other_processes": ctx.others(census, app),
            "peak_rss_mb": round(peak_rss_mb(app.pid) or 0.0, 1),
        }
        ctx.say(f"  {stage}: {out['events_per_s']} events/s ({len(completions)}/{len(expected)} events)")
        return out
    finally:
        await reader.stop()
