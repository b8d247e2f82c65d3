"""Alert rules and dashboard queries: valid PromQL, unit-tested alerts, one source of truth, runbooks.

promtool (built by deploy/tools/install-tools.sh) checks the rules file and runs its unit
tests (deploy/prometheus/alerts.test.yml); the dashboard's queries are checked by the same
parser by wrapping each in a recording rule.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from deploy_support import DEPLOY, REPO, Tools
from metric_names import alert_exprs, dashboard_exprs, series_names

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
OPERATIONS = REPO / "docs" / "operations.md"

# What the operators were promised an alert for, and a metric each must watch.
REQUIRED_ALERTS = {
    "StreamprocConsumerLagGrowing": "streamproc_consumer_lag",
    "StreamprocDeadLetterRateHigh": "streamproc_dead_letters_total",
    "StreamprocPluginErrorRateHigh": "streamproc_plugin_errors_total",
    "StreamprocLatencyP99OverBudget": "streamproc_end_to_end_latency_seconds_bucket",
    "StreamprocWorkerDown": "up",
    "StreamprocNoWorkerReady": "streamproc_worker_ready",
    "StreamprocGpuMemoryNearFull": "streamproc_gpu_memory_used_bytes",
    "StreamprocSinkFailing": "streamproc_sink_failures_total",
    "StreamprocCommitStalled": "streamproc_in_flight_events",
}
RUNBOOK_BASE = "https://github.com/streamproc/streamproc/blob/main/docs/operations.md"


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings, plus explicit ``id=`` anchors."""
    anchors = set(re.findall(r'id="([^"]+)"', markdown))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_rules_file_passes_promtool_check(tools: Tools) -> None:
    result = tools.run("promtool", "check", "rules", ALERTS)
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout + result.stderr


def test_alerts_fire_and_stay_quiet_as_their_unit_tests_say(tools: Tools) -> None:
    result = tools.run("promtool", "test", "rules", DEPLOY / "prometheus" / "alerts.test.yml")
    assert "SUCCESS" in result.stdout + result.stderr
    tested = set(re.findall(r"alertname:\s*(\w+)", (DEPLOY / "prometheus" / "alerts.test.yml").read_text()))
    assert tested == {rule["alert"] for rule in rules()}, "every alert needs a unit test"


def test_every_promised_alert_exists_and_watches_its_metric() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    for alert, metric in REQUIRED_ALERTS.items():
        assert alert in by_name, f"missing alert {alert}"
        assert metric in series_names(by_name[alert]["expr"]), f"{alert} does not use {metric}"


def test_every_alert_has_severity_summary_and_an_absolute_runbook_url_to_its_section() -> None:
    anchors = github_anchors(OPERATIONS.read_text())
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == RUNBOOK_BASE, f"{rule['alert']}: runbook URLs are absolute, under {RUNBOOK_BASE}"
        assert anchor == rule["alert"].lower(), f"{rule['alert']}: anchor should be the alert name"
        assert anchor in anchors, f"{rule['alert']}: docs/operations.md has no section #{anchor}"


def test_prometheus_rule_manifest_is_generated_from_the_rules_file() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "tools" / "sync_rules.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_dashboard_queries_are_valid_promql(tools: Tools, tmp_path: Path) -> None:
    """Each dashboard query, with Grafana's variables given typical values, parses in promtool."""
    substitutions = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
    recorded = []
    for i, (where, expr) in enumerate(dashboard_exprs()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        expr = re.sub(r"\$\w+", ".*", expr)  # multi-value variables are regex matchers
        recorded.append({"record": f"dashboard:query_{i}", "expr": expr, "labels": {"where": where}})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = tools.run("promtool", "check", "rules", path, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboard_select_job_streamproc_consistently() -> None:
    """The job the alerts select is the job compose scrapes (k8s: the ServiceMonitor's jobLabel)."""
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    for where, expr in alert_exprs():
        for job in re.findall(r'job="([^"]+)"', expr):
            assert job in jobs, f"{where} selects job {job!r}, scraped jobs are {jobs}"


def test_compose_prometheus_config_passes_promtool_check(tools: Tools, tmp_path: Path) -> None:
    """docker-compose's prometheus.yml, with the rules file where the container mounts it."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(ALERTS)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = tools.run("promtool", "check", "config", path)
    assert "SUCCESS" in result.stdout + result.stderr
