"""The benchmark's verdicts and pictures: targets as ratios, a summary table, PNG plots.

Targets, each measured side by side in one run (issue 15's, on a 2-core machine):

- ``pipeline >= 0.8 x min(compute, transport)`` (the recommender: ``0.5 x``: the broker
  and Redis share its two cores): *compute* is the fair compute limit, the best of
  {1, N} torch threads x {1, N} processes (``run._fair_limit``), not the worker's own
  configuration; *transport* is raw Kafka consume -> produce.
- ``pipeline >= 3 x naive`` and ``pipeline >= 1.3 x competent`` on every workload: the
  naive Faust agent and the competent one (``streamproc.bench.competent``).
- ``loop CPU per event <= 0.25 ms``: the worker's event-loop thread, at maximum throughput.
- ``p99 latency at 50% load <= max_wait + 3 x batch + 25 ms``: *batch* is the offline
  compute time (median ``run_batch`` wall time in the sweep) of a batch as large as the
  99th-percentile batch the worker formed at that load, rounded up to a swept size. An
  event waits at most ``max_wait`` for its batch to close, then for the batch in
  progress and its own; the third batch and 25 ms cover Kafka, Redis and the event
  loop. For the mixed workload the bound is summed along the longest route chain
  (audio -> speech -> translator).

A target whose figures come from a stage run on a busy machine (other processes above
``--max-other-cores`` before or during it: each stage's ``load``) is ``INVALID``, not
PASS or MISS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

THROUGHPUT_RATIO = 0.8
THROUGHPUT_RATIO_SHARED = {"recommender": 0.5}
"""Workloads whose pipeline shares the cores with a busy broker and Redis: a lower bar."""
NAIVE_RATIO = 3.0
COMPETENT_RATIO = 1.3
LOOP_MS_PER_EVENT = 0.25
LATENCY_SLACK_MS = 25.0
STAGES = ("compute", "transport", "pipeline", "naive", "competent")


def stage_section(workload: Mapping[str, Any], stage: str) -> Mapping[str, Any]:
    """The section of a stage that holds its rate: the fair limit for ``compute`` when it was
    measured, the maximum-throughput run for ``pipeline``."""
    section = workload.get(stage) or {}
    if stage in ("pipeline", "exactly_once"):
        return section.get("max") or {}
    if stage == "compute" and (section.get("fair") or {}).get("events_per_s"):
        return section["fair"]
    return section


def stage_rate(workload: Mapping[str, Any], stage: str) -> float | None:
    """The events/s of one stage of a workload, or ``None`` when it did not run."""
    value = stage_section(workload, stage).get("events_per_s")
    return float(value) if value else None


def invalid_stages(workload: Mapping[str, Any], stages: Sequence[str]) -> list[str]:
    """The stages among ``stages`` that ran on a machine too busy to trust (their ``load``)."""
    bad = []
    for stage in stages:
        section = stage_section(workload, stage)
        sections = (
            [section, *((workload.get(stage) or {}).get("latency") or {}).values()]
            if stage == "pipeline"
            else [section]
        )
        if any((s.get("load") or {}).get("valid") is False for s in sections):
            bad.append(stage)
    return bad


def batch_ms_for(compute: Mapping[str, Any] | None, size: float | None) -> float | None:
    """Offline median batch time of the smallest swept batch size >= ``size``."""
    sweep = (compute or {}).get("sweep") or []
    if not sweep or size is None:
        return None
    fitting = [p for p in sweep if p["batch_size"] >= size] or [max(sweep, key=lambda p: p["batch_size"])]
    return float(min(fitting, key=lambda p: p["batch_size"])["batch_ms_p50"])


def latency_bound_ms(
    name: str,
    workload: Mapping[str, Any],
    workloads: Mapping[str, Any],
    routes: Mapping[str, tuple[Sequence[str], str]],
) -> tuple[float | None, str]:
    """The p99 target at 50% load, with how it was made up."""
    phase = ((workload.get("pipeline") or {}).get("latency") or {}).get("50") or {}
    shapes = phase.get("batch_sizes") or {}

    def term(plugin: str) -> tuple[float | None, str]:
        compute = (workloads.get(plugin) or {}).get("compute")
        policy = (compute or {}).get("policy") or {}
        size = (shapes.get(plugin) or {}).get("p99_bucket") or 1
        size = min(size, policy.get("max_batch_size", size))
        batch = batch_ms_for(compute, size)
        if batch is None or "max_wait_ms" not in policy:
            return None, f"{plugin}: no offline sweep"
        wait = float(policy["max_wait_ms"])
        return wait + 3 * batch, f"{plugin}: {wait:g} + 3 x {batch:.1f} (batch of {size:g})"

    plugins = workload.get("plugins") or [name]
    best: tuple[float | None, str] = (None, "no route")
    for chain in _chains(plugins, routes):
        parts = [term(p) for p in chain]
        if any(value is None for value, _ in parts):
            return None, "; ".join(text for _, text in parts)
        total = sum(value for value, _ in parts if value is not None) + LATENCY_SLACK_MS
        if best[0] is None or total > best[0]:
            best = (total, " -> ".join(text for _, text in parts) + f" + {LATENCY_SLACK_MS:g} ms")
    return best


def _chains(plugins: Sequence[str], routes: Mapping[str, tuple[Sequence[str], str]]) -> list[list[str]]:
    """Every route chain among ``plugins``: from an input event type through chained results."""
    enabled = [p for p in plugins if p in routes]
    produced = {routes[p][1] for p in enabled}
    chains: list[list[str]] = []

    def walk(path: list[str]) -> None:
        kind = routes[path[-1]][1]
        followers = [p for p in enabled if kind in routes[p][0] and p not in path]
        if not followers:
            chains.append(path)
        for follower in followers:
            walk([*path, follower])

    for plugin in enabled:
        if any(source not in produced for source in routes[plugin][0]):
            walk([plugin])
    return chains or [[p] for p in enabled]


def evaluate_targets(
    workloads: Mapping[str, Any], routes: Mapping[str, tuple[Sequence[str], str]]
) -> list[dict[str, Any]]:
    """Every target of every workload: value, threshold, PASS/MISS/INVALID (or n/a with the reason)."""
    verdicts = []
    for name, workload in workloads.items():
        if workload.get("status") != "ok":
            continue
        rate = {stage: stage_rate(workload, stage) for stage in STAGES}
        pipeline, compute, transport = rate["pipeline"], rate["compute"], rate["transport"]
        bar = THROUGHPUT_RATIO_SHARED.get(name, THROUGHPUT_RATIO)
        verdicts.append(
            _verdict(
                workload,
                name,
                f"pipeline >= {bar:g} x min(compute, transport)",
                pipeline / min(compute, transport) if pipeline and compute and transport else None,
                bar,
                f"pipeline {_fmt(pipeline)}/s, fair compute {_fmt(compute)}/s, transport {_fmt(transport)}/s",
                ("pipeline", "compute", "transport"),
            )
        )
        for baseline, ratio in (("naive", NAIVE_RATIO), ("competent", COMPETENT_RATIO)):
            verdicts.append(
                _verdict(
                    workload,
                    name,
                    f"pipeline >= {ratio:g} x {baseline}",
                    pipeline / rate[baseline] if pipeline and rate[baseline] else None,
                    ratio,
                    f"pipeline {_fmt(pipeline)}/s, {baseline} {_fmt(rate[baseline])}/s",
                    ("pipeline", baseline),
                )
            )
        loop = stage_section(workload, "pipeline").get("loop_ms_per_event")
        verdicts.append(
            _verdict(
                workload,
                name,
                f"event-loop CPU per event <= {LOOP_MS_PER_EVENT:g} ms",
                loop,
                LOOP_MS_PER_EVENT,
                f"{_fmt(loop)} ms of the worker's main thread per event at maximum throughput",
                ("pipeline",),
                higher_is_better=False,
            )
        )
        phase = ((workload.get("pipeline") or {}).get("latency") or {}).get("50") or {}
        p99 = (phase.get("acknowledged") or {}).get("p99_ms")
        bound, how = latency_bound_ms(name, workload, workloads, routes)
        verdicts.append(
            _verdict(
                workload,
                name,
                "p99 latency at 50% load <= max_wait + 3 x batch + 25 ms",
                p99,
                bound,
                f"p99 {_fmt(p99)} ms; bound {_fmt(bound)} ms = {how}",
                ("pipeline",),
                higher_is_better=False,
            )
        )
    return verdicts


def _verdict(
    workload: Mapping[str, Any],
    name: str,
    target: str,
    value: float | None,
    threshold: float | None,
    detail: str,
    stages: Sequence[str],
    higher_is_better: bool = True,
) -> dict[str, Any]:
    met: bool | None = None
    if value is not None and threshold is not None:
        met = value >= threshold if higher_is_better else value <= threshold
    invalid = invalid_stages(workload, stages) if met is not None else []
    result = "n/a" if met is None else ("PASS" if met else "MISS")
    if invalid:
        result = "INVALID"
        detail += f"; busy machine during {', '.join(invalid)}"
    return {
        "workload": name,
        "target": target,
        "value": round(value, 4) if value is not None else None,
        "threshold": round(threshold, 4) if threshold is not None else None,
        "result": result,
        "detail": detail,
    }


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) < 10:
        return f"{value:.3g}"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def summary_text(report: Mapping[str, Any]) -> str:
    """The table printed at the end of a run."""
    lines = ["", "== streamproc bench ==", f"machine: {_machine_line(report.get('machine') or {})}", ""]
    header = (
        f"{'workload':<12} {'compute':>9} {'transport':>9} {'pipeline':>9} {'naive':>9} {'competent':>9}   events/s"
        " (compute: the fair limit)"
    )
    lines += [header, "-" * len(header)]
    for name, workload in report["workloads"].items():
        if workload.get("status") != "ok":
            lines.append(f"{name:<12} {workload.get('status')}")
            continue
        rates = [_fmt(stage_rate(workload, s)) for s in STAGES]
        lines.append(f"{name:<12} " + " ".join(f"{r:>9}" for r in rates))
    columns = f"{'load':>5} {'offered/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    lines += ["", f"{'workload':<12} {columns}  batch mean (per plugin)"]
    for name, workload in report["workloads"].items():
        for load, phase in ((workload.get("pipeline") or {}).get("latency") or {}).items():
            acked = phase.get("acknowledged") or {}
            shapes = (phase.get("batch_sizes") or {}).items()
            means = [str(s.get("mean")) if len(shapes) == 1 else f"{p} {s.get('mean')}" for p, s in shapes]
            lines.append(
                f"{name:<12} {load + '%':>5} {_fmt(phase.get('offered_events_per_s')):>9} "
                f"{_fmt(acked.get('p50_ms')):>8} {_fmt(acked.get('p95_ms')):>8} {_fmt(acked.get('p99_ms')):>8}  "
                + ", ".join(means)
            )
    lines += _guarantee_lines(report)
    lines += _resource_lines(report)
    lines += ["", "targets:"]
    for verdict in report.get("targets") or []:
        lines.append(
            f"  {verdict['result']:<4} {verdict['workload']:<12} {verdict['target']}: "
            f"{_fmt(verdict['value'])} vs {_fmt(verdict['threshold'])} ({verdict['detail']})"
        )
    return "\n".join(lines) + "\n"


def _guarantee_lines(report: Mapping[str, Any]) -> list[str]:
    """The pipeline at least once and exactly once: maximum events/s and p99 per load."""
    measured = {n: w for n, w in report["workloads"].items() if w.get("exactly_once")}
    if not measured:
        return []
    header = (
        f"{'workload':<12} {'at least once':>13} {'exactly once':>13} {'ratio':>6}   events/s;"
        " per load: p99 ms at least once -> exactly once, [records per transaction, transactions/s]"
    )
    lines = ["", header]
    for name, workload in measured.items():
        once, exactly = stage_rate(workload, "pipeline"), stage_rate(workload, "exactly_once")
        ratio = exactly / once if once and exactly else None
        eos = workload["exactly_once"]
        phases = [("max", None, eos.get("max") or {})]
        for load, phase in ((workload.get("pipeline") or {}).get("latency") or {}).items():
            phases.append((f"{load}%", phase, ((eos.get("latency") or {}).get(load)) or {}))
        cells = []
        for label, phase, eos_phase in phases:
            publish = eos_phase.get("publish") or {}
            shape = f"[{_fmt(publish.get('records_per_write'))}, {_fmt(publish.get('writes_per_s'))}/s]"
            if phase is None:
                cells.append(f"{label}: {shape}")
                continue
            p99 = (phase.get("acknowledged") or {}).get("p99_ms")
            eos_p99 = (eos_phase.get("acknowledged") or {}).get("p99_ms")
            cells.append(f"{label}: {_fmt(p99)} -> {_fmt(eos_p99)} {shape}")
        lines.append(f"{name:<12} {_fmt(once):>13} {_fmt(exactly):>13} {_fmt(ratio):>6}   " + "; ".join(cells))
    return lines


def _resource_lines(report: Mapping[str, Any]) -> list[str]:
    """CPU (cores) per process at maximum throughput, and memory (MB) per workload."""
    header = (
        f"{'workload':<12} {'worker':>6} {'kafka':>6} {'redis':>6} {'bench':>6} {'other':>6}   cores at max;"
        f" {'loaded':>7} {'ready':>7} {'peak':>7}  RSS MB; {'loop':>6} ms/event; {'start':>5} s"
    )
    lines = ["", header]
    per_plugin = (report.get("memory") or {}).get("per_plugin") or {}
    for name, workload in report["workloads"].items():
        pipeline = workload.get("pipeline") or {}
        cpu = (pipeline.get("max") or {}).get("cpu_cores") or {}
        loaded = (per_plugin.get(name) or {}).get("rss_loaded_mb")
        if loaded is None:
            loaded = ((workload.get("compute") or {}).get("memory") or {}).get("rss_loaded_mb")
        processes = ("worker", "kafka", "redis", "bench", "other")
        cores = " ".join(f"{cpu[k]:>6.2f}" if k in cpu else f"{'n/a':>6}" for k in processes)
        loop = (pipeline.get("max") or {}).get("loop_ms_per_event")
        lines.append(
            f"{name:<12} {cores}         {_fmt(loaded):>7} {_fmt(pipeline.get('rss_ready_mb')):>7}"
            f" {_fmt(pipeline.get('peak_rss_mb')):>7}          {_fmt(loop):>6}           "
            f"{_fmt(pipeline.get('cold_start_s')):>5}"
        )
    return lines


def _machine_line(machine: Mapping[str, Any]) -> str:
    start = machine.get("start") or {}
    end = machine.get("end") or {}
    return (
        f"{start.get('cpu_count')} cores, load average {start.get('load_average')} at start, "
        f"{end.get('load_average')} at end"
    )


def write_plots(report: Mapping[str, Any], latencies: Mapping[str, Mapping[str, list[float]]], out: Path) -> list[str]:
    """throughput.png (bars per workload and stage, log scale) and latency_cdf.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = [n for n, w in report["workloads"].items() if w.get("status") == "ok"]
    if names:
        fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names) + 2), 4.5))
        width = 0.16
        for i, stage in enumerate(STAGES):
            values = [stage_rate(report["workloads"][n], stage) or 0.0 for n in names]
            offset = (i - (len(STAGES) - 1) / 2) * width
            bars = ax.bar([x + offset for x in range(len(names))], values, width, label=stage)
            for bar, value in zip(bars, values, strict=True):
                if value:
                    ax.annotate(
                        _fmt(value), (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=7
                    )
        ax.set_xticks(range(len(names)), names)
        ax.set_yscale("log")
        ax.set_ylabel("events / s")
        ax.set_title("Throughput: fair compute limit, transport limit, pipeline, naive and competent baselines")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=120)
        plt.close(fig)
        written.append("throughput.png")
    curves = {n: phases for n, phases in latencies.items() if any(phases.values())}
    if curves:
        cols = min(3, len(curves))
        rows = math.ceil(len(curves) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
        for ax, (name, phases) in zip(axes.flat, curves.items(), strict=False):
            for load, samples in sorted(phases.items()):
                if samples:
                    ordered = sorted(samples)
                    ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=f"{load}% load")
            bound = next(
                (
                    t["threshold"]
                    for t in report.get("targets") or []
                    if t["workload"] == name and t["target"].startswith("p99") and t["threshold"]
                ),
                None,
            )
            if bound:
                ax.axvline(bound, color="grey", linestyle="--", linewidth=1, label="p99 target")
            ax.set_xscale("log")
            ax.set_title(name)
            ax.set_xlabel("event -> result acknowledged (ms)")
            ax.set_ylabel("share of events")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(curves) :]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / "latency_cdf.png", dpi=120)
        plt.close(fig)
        written.append("latency_cdf.png")
    return written
