"""The plugin contract, checked on a plugin author's own events.

``check_contract`` runs a plugin over events the way the worker would and reports every
broken promise of the plugin API (``streamproc.plugin``):

- ``infer`` returns one output per input, in order;
- every result body is a JSON object with string keys, serialisable without NaN or
  Infinity (the wire format refuses them);
- results do not depend on how events were batched (one by one == batched);
- a fresh load gives the same results (when the plugin claims determinism);
- ``state_key`` and ``update_state`` are pure: the same inputs give the same key and
  state, the state passed in is not mutated, and the new state is JSON-serialisable.

Floats are compared with a tolerance (``rel_tol``), since batched kernels may sum in
another order than single-item ones.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from streamproc.engine.runtime import Outcome
from streamproc.events import Event
from streamproc.testing.harness import PluginHarness


class ContractViolation(AssertionError):
    """A plugin broke its contract; ``violations`` names each broken promise."""

    def __init__(self, plugin: str, violations: Sequence[str]) -> None:
        self.violations = list(violations)
        super().__init__(f"plugin {plugin} breaks its contract:\n- " + "\n- ".join(self.violations))


@dataclass
class ContractReport:
    """What was checked, on how many events; ``violations`` is empty when the plugin holds."""

    plugin: str
    events: int
    results: int
    skipped: int
    failed: int
    checks: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


def check_contract(
    load: Callable[[], PluginHarness],
    events: Sequence[Event],
    deterministic: bool = True,
    batch_invariant: bool = True,
    rel_tol: float = 1e-4,
) -> ContractReport:
    """Check the contract on ``events`` and return the report; raises ``ContractViolation``
    listing every violation. ``load`` returns a freshly loaded harness (called once more
    for the one-by-one run, and once more when ``deterministic``, to compare two loads).
    A plugin whose outputs legitimately vary with the batch beyond ``rel_tol`` (encoded
    images whose pixels may differ by one level) passes ``batch_invariant=False`` and
    checks its own tolerance."""
    harness = load()
    name = harness.plugin.name
    report = ContractReport(name, len(events), 0, 0, 0)
    batched = harness.run(events)
    report.results = sum(1 for o in batched if o.body is not None)
    report.skipped = sum(1 for o in batched if o.skipped)
    report.failed = sum(1 for o in batched if o.failure is not None)

    report.checks.append("one output per input")
    report.violations += _output_counts(harness, events)
    report.checks.append("JSON result bodies")
    report.violations += _json_bodies(batched)
    if batch_invariant:
        report.checks.append("batching does not change results")
        alone = load()
        single = [outcome for event in events for outcome in alone.run([event])]
        report.violations += _differences("one by one", batched, single, rel_tol)
    if deterministic:
        report.checks.append("deterministic across loads")
        report.violations += _differences("a second load", batched, load().run(events), rel_tol)
    report.checks.append("pure state updates")
    report.violations += _state_purity(harness, events)
    if report.violations:
        raise ContractViolation(name, report.violations)
    return report


def _output_counts(harness: PluginHarness, events: Sequence[Event]) -> list[str]:
    prepared = []
    for event in events:
        try:
            key = harness.plugin.state_key(event)
            item = harness.plugin.prepare(event, harness.states.get(key) if key is not None else None)
        except Exception:  # refusals are the plugin's right; they are checked by its own tests
            continue
        if item is not None:
            prepared.append(item)
    if not prepared:
        return []
    with torch.inference_mode():
        outputs = harness.plugin.infer(prepared)
    if len(outputs) != len(prepared):
        return [f"infer returned {len(outputs)} outputs for {len(prepared)} inputs"]
    return []


def _json_bodies(outcomes: Sequence[Outcome]) -> list[str]:
    violations = []
    for index, outcome in enumerate(outcomes):
        if outcome.failure is not None and outcome.failure.stage == "result":  # the runtime's own JSON check
            violations.append(f"event {index}: {outcome.failure.reason}")
        if outcome.body is None:
            continue
        if not all(isinstance(k, str) for k in outcome.body):
            violations.append(f"event {index}: result body has non-string keys")
            continue
        try:
            json.dumps(outcome.body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            violations.append(f"event {index}: result body is not JSON: {exc}")
    return violations


def _differences(label: str, expected: Sequence[Outcome], actual: Sequence[Outcome], rel_tol: float) -> list[str]:
    violations = []
    for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
        if a.failure != b.failure:
            violations.append(f"event {index}: failure {a.failure} batched but {b.failure} with {label}")
        elif not _close(a.body, b.body, rel_tol):
            violations.append(f"event {index}: result differs with {label}: {a.body!r:.200} vs {b.body!r:.200}")
    return violations


def _close(a: Any, b: Any, rel_tol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        numbers = isinstance(a, int | float) and isinstance(b, int | float)
        return numbers and math.isclose(a, b, rel_tol=rel_tol, abs_tol=rel_tol)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel_tol) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y, rel_tol) for x, y in zip(a, b, strict=True))
    return a == b


def _state_purity(harness: PluginHarness, events: Sequence[Event]) -> list[str]:
    plugin = harness.plugin
    violations = []
    states: dict[str, Mapping[str, Any] | None] = {}
    for index, event in enumerate(events):
        key = plugin.state_key(event)
        if key is None:
            continue
        if plugin.state_key(event) != key:
            violations.append(f"event {index}: state_key is not deterministic")
        before = states.get(key)
        snapshot = copy.deepcopy(before)
        first = plugin.update_state(before, event)
        if before != snapshot:
            violations.append(f"event {index}: update_state mutated the state it was given")
        if plugin.update_state(copy.deepcopy(snapshot), event) != first:
            violations.append(f"event {index}: update_state gave another state for the same inputs")
        try:
            states[key] = json.loads(json.dumps(first, allow_nan=False))
        except (TypeError, ValueError) as exc:
            violations.append(f"event {index}: new state is not JSON: {exc}")
            states[key] = before
    return violations
