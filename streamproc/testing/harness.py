"""Run one plugin in-process exactly as the worker runs it, without Kafka or Redis.

``PluginHarness`` takes events (typed, or raw record bytes decoded as the worker decodes
them), applies keyed state in input order (``state_key`` / ``update_state``, state kept
in memory and round-tripped through JSON as Redis would store it), and runs the items
through ``PluginRuntime.run_batch`` in batches of the plugin's ``max_batch_size``:
prepare, one batched ``infer`` under inference mode, ``result``. Each event ends as an
``Outcome``: a result body, a skip (``prepare`` returned ``None``) or a failure with the
stage and reason the worker would put in the dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

import torch

from streamproc.config import PluginSettings
from streamproc.engine.runtime import Outcome, PluginRuntime
from streamproc.errors import PluginLoadError
from streamproc.events import Event, PayloadLimits, decode_event
from streamproc.plugin import ENTRY_POINT_GROUP, Plugin
from streamproc.registry import check_entry_point, validated_options


class PluginFailed(AssertionError):
    """An event that a test expected to yield a result ended as a failure instead."""


class PluginHarness:
    """One loaded plugin with in-memory keyed state; see the module docstring."""

    def __init__(self, runtime: PluginRuntime) -> None:
        self.runtime = runtime
        self.states: dict[str, Mapping[str, Any]] = {}
        """Keyed state after the events run so far, as JSON would give it back."""

    @classmethod
    def load(
        cls,
        name: str,
        options: Mapping[str, Any] | None = None,
        device: str = "cpu",
        batch: Mapping[str, Any] | None = None,
        infer_retries: int = 1,
    ) -> PluginHarness:
        """The installed plugin ``name`` (found through its entry point, options validated
        against its ``Options`` model, as the worker does), loaded on ``device``. ``batch``
        overrides its batch policy (``max_batch_size`` ...), as ``plugins.<name>.batch``
        does. Raises ``PluginLoadError`` for an unknown name, ``ConfigError`` for bad options."""
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
            plugin_cls = check_entry_point(ep)
            settings = PluginSettings(options=dict(options or {}), batch=dict(batch or {}))
            return cls.of(plugin_cls(), settings, device, infer_retries)
        raise PluginLoadError(f"no plugin {name!r} in the {ENTRY_POINT_GROUP!r} entry-point group")

    @classmethod
    def of(
        cls, plugin: Plugin, settings: PluginSettings | None = None, device: str = "cpu", infer_retries: int = 1
    ) -> PluginHarness:
        """A harness around a plugin instance (not yet loaded), for plugins not installed."""
        settings = settings or PluginSettings()
        options = validated_options(type(plugin), settings.options)
        runtime = PluginRuntime(plugin, settings, torch.device(device), None, infer_retries, options)
        runtime.load()
        return cls(runtime)

    @classmethod
    def around(cls, plugin: Plugin, device: str = "cpu") -> PluginHarness:
        """A harness around a plugin that is already loaded (a test's shared fixture), with
        the plugin's own batch policy."""
        return cls(PluginRuntime(plugin, PluginSettings(), torch.device(device), None, infer_retries=1))

    @property
    def plugin(self) -> Plugin:
        return self.runtime.plugin

    def run(self, events: Iterable[Event | bytes]) -> list[Outcome]:
        """One outcome per event, in order. Raw bytes are decoded as the worker decodes a
        record value (``InvalidEvent`` propagates: the worker would dead-letter the record
        before any plugin sees it)."""
        items: list[tuple[Event, Mapping[str, Any] | None]] = []
        for event in events:
            typed = decode_event(event, PayloadLimits()) if isinstance(event, bytes) else event
            items.append((typed, self._apply_state(typed)))
        size = self.runtime.policy.max_batch_size
        outcomes: list[Outcome] = []
        for start in range(0, len(items), size):
            batch_outcomes, _ = self.runtime.run_batch(items[start : start + size])
            outcomes.extend(batch_outcomes)
        return outcomes

    def results(self, events: Iterable[Event | bytes]) -> list[dict[str, Any] | None]:
        """The result body of each event (``None`` when skipped); raises ``PluginFailed``
        naming the first event that failed, with its stage and reason."""
        events = list(events)
        bodies: list[dict[str, Any] | None] = []
        for index, outcome in enumerate(self.run(events)):
            if outcome.failure is not None:
                raise PluginFailed(f"event {index} failed at {outcome.failure.stage}: {outcome.failure.reason}")
            bodies.append(None if outcome.body is None else dict(outcome.body))
        return bodies

    def _apply_state(self, event: Event) -> Mapping[str, Any] | None:
        key = self.plugin.state_key(event)
        if key is None:
            return None
        updated = self.plugin.update_state(self.states.get(key), event)
        self.states[key] = json.loads(json.dumps(updated, allow_nan=False))
        return self.states[key]
