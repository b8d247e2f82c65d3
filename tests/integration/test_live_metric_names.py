"""Every metric the dashboard and the alerts query exists in a live worker's /metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from harness import WorkerProcess, create_topics, make_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from metric_names import used_metric_names

pytestmark = pytest.mark.integration


def test_dashboard_and_alert_metrics_exist_in_a_live_worker(endpoints, unique, tmp_path, test_plugins_path) -> None:
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["echo", "broken"])
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    worker = WorkerProcess(settings, tmp_path, test_plugins_path).start()
    try:
        status, text = worker.http("/metrics")
    finally:
        worker.terminate()
    assert status == 200
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    # prometheus-client exports counters as <name>_total under the family name without the suffix
    exported |= {f"{name}_total" for name in exported}
    used = used_metric_names()
    assert used, "no metric names found in the dashboard and alerts"
    assert used <= exported, f"not exported by a live worker: {sorted(used - exported)}"
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples["streamproc_worker_ready"]) == 1.0, "a ready worker must say so"
    assert float(samples["streamproc_plugin_load_failures"]) == 1.0, "the broken test plugin is counted"
