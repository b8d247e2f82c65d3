"""The metric names the deployment's dashboard and alerts query, from their PromQL.

``used_metric_names()`` is the contract with the worker: every family it returns must be
exported by a running worker (a separate check compares it with a live ``/metrics``), and
``tests/deploy`` checks it against ``streamproc.ops.metrics.METRIC_NAMES``.

PromQL is read with a small tokenizer, not a full parser (``promtool`` parses the same
expressions in ``test_alerts.py``): string literals, label matchers ``{...}``, ranges
``[...]`` and the label lists of ``by``/``without``/``on``/``ignoring``/``group_*`` are
removed; an identifier left over that is not a function call, keyword or number is a
metric name. Histogram series (``_bucket``, ``_sum``, ``_count``) map to their family.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "streamproc.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

# Series Prometheus itself writes for every target; a worker's /metrics never has them.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def series_names(expr: str) -> set[str]:
    """Metric (series) names an expression selects, as written (``_bucket`` included)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def family(series: str, known: Iterable[str]) -> str:
    """The family a series belongs to: ``x_bucket`` -> ``x`` when ``x`` is a known family."""
    known = set(known)
    if series in known:
        return series
    for suffix in _HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in known:
            return series[: -len(suffix)]
    return series


def dashboard_exprs(path: Path = DASHBOARD) -> Iterator[tuple[str, str]]:
    """(where, expr) for every query of the dashboard, template variables included."""
    board = json.loads(path.read_text())

    def panels(items: list[dict]) -> Iterator[dict]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('title')!r}", target["expr"]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
            yield f"variable {variable['name']!r}", inner.group(1) if inner else query


def alert_exprs(path: Path = ALERTS) -> Iterator[tuple[str, str]]:
    """(where, expr) for every rule of the rules file."""
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')!r}", rule["expr"]


def used_series() -> dict[str, set[str]]:
    """Every series name used by the dashboard and the alerts, with where it is used."""
    used: dict[str, set[str]] = {}
    for where, expr in (*dashboard_exprs(), *alert_exprs()):
        for name in series_names(expr):
            used.setdefault(name, set()).add(where)
    return used


def used_metric_names() -> set[str]:
    """Families of worker metrics used by the dashboard and the alerts.

    Histogram series map to their family (``streamproc_batch_size_sum`` ->
    ``streamproc_batch_size``); series that Prometheus writes itself (``up``) are left
    out, since no worker exports them.
    """
    from streamproc.ops.metrics import METRIC_NAMES

    return {family(name, METRIC_NAMES) for name in used_series() if name not in PROMETHEUS_SERIES}
