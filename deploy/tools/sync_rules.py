"""Generate the Kubernetes PrometheusRule from the plain Prometheus rules file.

``deploy/prometheus/alerts.yml`` is the single source of truth for the alerts:
docker-compose's Prometheus loads it as it is, and the Prometheus Operator needs the
same groups wrapped in a PrometheusRule object, written to
``deploy/k8s/base/prometheusrule.yaml``. Run after editing the alerts:

    python deploy/tools/sync_rules.py          # rewrite the PrometheusRule
    python deploy/tools/sync_rules.py --check  # exit 1 if it is out of date (tests do this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
RULES = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/tools/sync_rules.py: do not edit.
# The Prometheus Operator loads PrometheusRule objects that match its ruleSelector;
# kube-prometheus-stack selects `release: <its release name>` by default: add that
# label in an overlay (docs/operations.md, "Prometheus and Grafana").
"""


class _BlockStyleDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL expressions) as literal blocks, as in the source."""


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _str_presenter)


def render() -> str:
    """The PrometheusRule manifest for the groups in the rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "streamproc", "labels": {"app.kubernetes.io/name": "streamproc"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(rule, Dumper=_BlockStyleDumper, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the PrometheusRule is out of date")
    args = parser.parse_args(argv)
    wanted = render()
    current = PROMETHEUS_RULE.read_text() if PROMETHEUS_RULE.exists() else ""
    if args.check:
        if current != wanted:
            print(f"{PROMETHEUS_RULE} is out of date: run python deploy/tools/sync_rules.py", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        PROMETHEUS_RULE.write_text(wanted)
        print(f"wrote {PROMETHEUS_RULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
