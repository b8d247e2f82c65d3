"""``streamproc bench`` at tiny sizes, with the test plugins, against the real Kafka and Redis.

A smoke run, not a measurement: it proves every stage runs and reports sane figures.
No timing is asserted (the machine may be busy); only that figures exist and are positive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamproc.bench.run import fair_configurations
from streamproc.engine.runtime import available_cores

pytestmark = pytest.mark.integration

STAGES = ("compute", "transport", "pipeline", "naive", "competent")


def _rate(workload: dict, stage: str) -> float:
    section = workload[stage]["max"] if stage == "pipeline" else workload[stage]
    return float(section.get("events_per_s") or 0.0)


def _bench(endpoints, plugins_path: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``streamproc bench --quick`` at tiny sizes against the test's Kafka and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
    env.update(
        STREAMPROC_KAFKA_BOOTSTRAP=endpoints.kafka_bootstrap,
        STREAMPROC_REDIS_URL=endpoints.redis_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(plugins_path), env.get("PYTHONPATH")])),
    )
    command = [sys.executable, "-m", "streamproc", "bench", "--quick", "--out", str(out), *options]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_bench_reports_every_stage_latency_batches_cpu_and_memory_for_each_workload(
    endpoints, test_plugins_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    done = _bench(endpoints, test_plugins_path, out, "--plugins", "echo,counter", "--events", "60", "--duration", "1.5")

    report = json.loads((out / "bench.json").read_text())
    assert set(report["workloads"]) == {"echo", "counter", "mixed"}
    for name, workload in report["workloads"].items():
        assert workload["status"] == "ok", (name, workload["status"])
        for stage in STAGES:
            assert _rate(workload, stage) > 0, (name, stage, workload.get(stage))
        if name != "mixed":
            assert all(point["events_per_s"] > 0 for point in workload["compute"]["sweep"])
        pipeline = workload["pipeline"]
        assert pipeline["max"]["completed_events"] == pipeline["events"]
        assert pipeline["max"]["cpu_cores"]["worker"] > 0
        assert pipeline["peak_rss_mb"] > 0
        assert set(pipeline["latency"]) == {"50", "90"}
        for load, phase in pipeline["latency"].items():
            assert phase["completed_events"] > 0, (name, load)
            assert phase["acknowledged"]["p99_ms"] > 0
            assert phase["acknowledged"]["p99_ms"] >= phase["acknowledged"]["p50_ms"]
            assert all(shape["batches"] > 0 for shape in phase["batch_sizes"].values())
        exactly_once = workload["exactly_once"]  # the same pipeline, a transaction per publication batch
        assert exactly_once["max"]["completed_events"] == pipeline["events"]
        assert all(phase["acknowledged"]["p99_ms"] > 0 for phase in exactly_once["latency"].values())
        assert workload["naive"]["cpu_cores"]["naive"] > 0
        assert workload["competent"]["cpu_cores"]["competent"] > 0
        assert pipeline["max"]["loop_ms_per_event"] > 0
        fair = workload["compute"]["fair"]
        configs = {(c["threads"], c["processes"]) for c in fair["configurations"]}
        assert configs == set(fair_configurations(available_cores()))
        assert all(c["events_per_s"] > 0 for c in fair["configurations"]), fair
        assert fair["events_per_s"] == max(c["events_per_s"] for c in fair["configurations"])
        for section in (workload["compute"], fair, workload["transport"], pipeline["max"], workload["naive"]):
            assert isinstance(section["load"]["valid"], bool), section["load"]

    memory = report["memory"]
    assert {"echo", "counter"} <= set(memory["per_plugin"])
    assert all(m["rss_loaded_mb"] > 0 and m["rss_warm_mb"] > 0 for m in memory["per_plugin"].values())
    assert memory["all_plugins"]["worker_peak_rss_mb"] > 0
    verdicts = {(t["workload"], t["target"]): t["result"] for t in report["targets"]}
    assert {w for w, _ in verdicts} == {"echo", "counter", "mixed"}
    assert set(verdicts.values()) <= {"PASS", "MISS", "INVALID"}  # INVALID: the test machine was busy
    assert any(word in done.stdout for word in ("PASS", "MISS", "INVALID"))
    assert "exactly once" in done.stdout

    latencies = json.loads((out / "latencies.json").read_text())
    assert all(latencies[name]["50"] for name in report["workloads"])
    assert (out / "throughput.png").stat().st_size > 0
    assert (out / "latency_cdf.png").stat().st_size > 0


def test_bench_pipeline_runs_a_consumer_group_of_several_workers_and_skips_stages(
    endpoints, test_plugins_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    options = [
        "--plugins",
        "echo",
        "--no-mixed",
        "--workers",
        "2",
        "--skip",
        "transport,naive,competent,fair,exactly_once",
    ]
    _bench(endpoints, test_plugins_path, out, *options, "--events", "200", "--duration", "1.5")

    report = json.loads((out / "bench.json").read_text())
    workload = report["workloads"]["echo"]
    assert not {"transport", "naive", "competent", "exactly_once"} & set(workload) and "fair" not in workload["compute"]
    pipeline = workload["pipeline"]
    assert pipeline["workers"] == 2
    assert pipeline["max"]["completed_events"] == pipeline["events"] == 200
    assert pipeline["max"]["events_per_s"] > 0
    assert len(pipeline["peak_rss_mb_each"]) == 2 and all(rss > 0 for rss in pipeline["peak_rss_mb_each"])
    assert pipeline["exit_status"] == [0, 0]  # both members stopped cleanly on SIGTERM
    assert all(phase["completed_events"] > 0 for phase in pipeline["latency"].values())
    throughput = next(t for t in report["targets"] if t["target"].startswith("pipeline >= 0.8"))
    assert throughput["result"] == "n/a"  # no transport limit measured: no ratio claimed
