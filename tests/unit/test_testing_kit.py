"""The plugin authors' test kit (``streamproc.testing``) on the fixture plugins."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from streamproc.events import Event, PlaybackEvent
from streamproc.testing import ContractViolation, PluginFailed, PluginHarness, check_contract


@pytest.fixture(autouse=True)
def fixture_plugins(test_plugins_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(test_plugins_path))


def playback(n: int, user: str = "u1") -> PlaybackEvent:
    return PlaybackEvent(
        id=f"evt-{n}",
        type="playback",
        ts=1_700_000_000_000 + n,
        user_id=user,
        item_id=f"item-{n}",
        action="start",
        position_s=0.0,
        duration_s=60.0,
        media="video",
    )


EVENTS = [playback(n, user=f"u{n % 2}") for n in range(6)]


def test_the_harness_runs_keyed_state_in_input_order_and_batches_like_the_worker() -> None:
    harness = PluginHarness.load("counter")
    assert harness.results(EVENTS) == [{"count": c} for c in (1, 1, 2, 2, 3, 3)]
    assert harness.states == {"u0": {"count": 3, "last": "evt-4"}, "u1": {"count": 3, "last": "evt-5"}}


def test_raw_records_are_decoded_as_the_worker_decodes_them() -> None:
    raw = json.dumps(playback(1).model_dump(mode="json")).encode()
    assert PluginHarness.load("echo").results([raw]) == [{"id": "evt-1", "type": "playback", "batch": 1}]


def test_a_failed_event_is_reported_with_its_stage_and_reason() -> None:
    from streamproc.events import UploadEvent

    refused = UploadEvent(id="e", type="upload", ts=1, user_id="u", upload_id="up", title="refuse")
    (outcome,) = PluginHarness.load("flaky").run([refused])
    assert outcome.failure is not None and outcome.failure.stage == "prepare"
    with pytest.raises(PluginFailed, match="event 0 failed at prepare: title: 'refuse'"):
        PluginHarness.load("flaky").results([refused])


def test_a_stateful_plugin_that_keeps_its_promises_meets_the_contract() -> None:
    report = check_contract(lambda: PluginHarness.load("counter"), EVENTS)
    assert report.results == len(EVENTS) and not report.violations
    assert "pure state updates" in report.checks and "batching does not change results" in report.checks


def test_results_that_depend_on_the_batch_break_the_contract() -> None:
    with pytest.raises(ContractViolation, match="result differs with one by one"):
        check_contract(lambda: PluginHarness.load("echo"), EVENTS)  # echo reports its batch size


def test_a_state_update_that_mutates_its_input_breaks_the_contract() -> None:
    from streamproc_testplugins.plugins import Counter

    class Mutating(Counter):
        def update_state(self, state: Mapping[str, Any] | None, event: Event) -> Mapping[str, Any]:
            if state is None:
                return {"count": 1, "seen": [event.id]}
            state["seen"].append(event.id)  # type: ignore[index]
            return {"count": state["count"] + 1, "seen": state["seen"]}

    with pytest.raises(ContractViolation, match="update_state mutated the state it was given"):
        check_contract(lambda: PluginHarness.of(Mutating()), EVENTS)


def test_a_result_body_that_is_not_json_breaks_the_contract() -> None:
    from streamproc_testplugins.plugins import Counter

    class NotJson(Counter):
        def result(self, event: Event, output: Any) -> Mapping[str, Any]:
            return {"score": float("nan")}

    with pytest.raises(ContractViolation, match="result body is not JSON"):
        check_contract(lambda: PluginHarness.of(NotJson()), EVENTS[:2])
