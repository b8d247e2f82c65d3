"""The dashboard shows delivery: in flight against acknowledged, sink failures and the committed lag."""

from __future__ import annotations

import json

from deploy_support import DEPLOY


def test_dashboard_shows_in_flight_acknowledged_sink_failures_and_committed_lag() -> None:
    board = json.loads((DEPLOY / "grafana" / "streamproc.json").read_text())
    panels = {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in board["panels"]}
    in_flight = " ".join(panels["In flight vs acknowledged"])
    assert "streamproc_in_flight_events" in in_flight and "rate(streamproc_results_total" in in_flight
    assert "rate(streamproc_dead_letters_total" in in_flight
    assert any("by (sink) (rate(streamproc_sink_failures_total" in e for e in panels["Sink write failures"])
    assert any("by (topic, partition) (streamproc_committed_lag" in e for e in panels["Committed lag by partition"])
    versus = " ".join(panels["Committed lag vs consumer lag"])
    assert "streamproc_committed_lag" in versus and "streamproc_consumer_lag" in versus
