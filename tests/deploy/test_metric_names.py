"""The dashboard and the alerts query only metrics the worker exports, and the dashboard shows what it promises."""

from __future__ import annotations

import json

from deploy_support import DEPLOY
from metric_names import PROMETHEUS_SERIES, family, series_names, used_metric_names, used_series

from streamproc.ops.metrics import METRIC_NAMES, Metrics

DASHBOARD = DEPLOY / "grafana" / "streamproc.json"


def test_every_series_used_belongs_to_a_worker_metric_family() -> None:
    unknown = {
        name: sorted(where)
        for name, where in used_series().items()
        if name not in PROMETHEUS_SERIES and family(name, METRIC_NAMES) not in METRIC_NAMES
    }
    assert not unknown, f"not in streamproc.ops.metrics.METRIC_NAMES: {unknown}"


def test_histogram_suffixes_are_used_only_on_histograms() -> None:
    """``x_bucket`` must be a real histogram series, not a gauge or counter with a lookalike name."""
    histograms = {m.name for m in Metrics().registry.collect() if m.type == "histogram"}
    for name in used_series():
        fam = family(name, METRIC_NAMES)
        if fam != name:
            assert fam in histograms, f"{name}: {fam} is not a histogram"


def test_used_metric_names_returns_families_only() -> None:
    used = used_metric_names()
    assert used <= set(METRIC_NAMES)
    assert "streamproc_end_to_end_latency_seconds" in used and "up" not in used
    assert not any(name.endswith(("_bucket", "_sum", "_count")) for name in used)


def test_series_names_ignores_labels_functions_and_keywords() -> None:
    expr = (
        'sum by (plugin, le) (rate(streamproc_end_to_end_latency_seconds_bucket{plugin=~"a|b", job="x"}[5m]))'
        " / on (plugin) group_left(kind) streamproc_results_total offset 5m and absent(up == 1)"
    )
    assert series_names(expr) == {"streamproc_end_to_end_latency_seconds_bucket", "streamproc_results_total", "up"}


def test_dashboard_shows_every_promised_view() -> None:
    board = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    promised = {
        "throughput per event type": "by (type) (rate(streamproc_events_consumed_total",
        "throughput per plugin": "by (plugin, kind) (rate(streamproc_results_total",
        "latency p50": "histogram_quantile(0.5, sum by (plugin, le) (rate(streamproc_end_to_end_latency",
        "latency p99": "histogram_quantile(0.99, sum by (plugin, le) (rate(streamproc_end_to_end_latency",
        "batch sizes": "streamproc_batch_size_sum",
        "queue depth": "streamproc_queue_depth",
        "lag": "streamproc_consumer_lag",
        "dead letters": "streamproc_dead_letters_total",
        "errors": "streamproc_plugin_errors_total",
        "GPU memory": "streamproc_gpu_memory_used_bytes",
    }
    for view, fragment in promised.items():
        assert fragment in exprs, f"dashboard lacks {view}"


def test_dashboard_is_portable_and_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "streamproc" and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert panel["title"], panel
        if panel["type"] == "row":
            continue
        # No hard-wired data source: the dashboard imports into any Grafana.
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'job=~"$job"' in target["expr"], f"{panel['title']}: ignores the job variable"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
