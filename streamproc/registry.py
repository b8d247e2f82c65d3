"""Plugin discovery through the ``streamproc.plugins`` entry-point group (pytest/pluggy style).

Every installed distribution that registers a ``Plugin`` subclass there is found the same
way, bundled or third-party. Discovery never raises for one bad plugin: it reports which
plugins loaded and which failed, and why, so one broken plugin does not stop the others
(unless the caller asks to fail fast).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import torch

from streamproc.errors import PluginLoadError
from streamproc.plugin import ENTRY_POINT_GROUP, LoadContext, Plugin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoveredPlugin:
    """A plugin class found through its entry point, with the distribution that provides it."""

    name: str
    cls: type[Plugin]
    distribution: str
    version: str


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not be turned into a usable plugin."""

    name: str
    distribution: str
    reason: str


def discover() -> tuple[list[DiscoveredPlugin], list[PluginFailure]]:
    """Import every entry point of the group and check it is a well-formed plugin class."""
    found: list[DiscoveredPlugin] = []
    failures: list[PluginFailure] = []
    seen: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        try:
            cls = _check(ep)
        except PluginLoadError as exc:
            failures.append(PluginFailure(ep.name, dist, str(exc)))
            log.warning("plugin %s from %s failed to load: %s", ep.name, dist, exc)
            continue
        if cls.name in seen:
            failures.append(PluginFailure(ep.name, dist, f"name {cls.name!r} already provided by {seen[cls.name]}"))
            continue
        seen[cls.name] = dist
        found.append(DiscoveredPlugin(cls.name, cls, dist, version))
    return found, failures


def load_plugin(name: str, options: Mapping[str, Any] | None = None, device: str = "cpu") -> Plugin:
    """One installed plugin, found through its entry point as the worker finds it, loaded on
    ``device`` with ``options`` (for tests and tools). Raises ``PluginLoadError`` when no
    entry point has that name, and whatever the plugin's ``load`` raises (``ConfigError``)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        plugin = _check(ep)()
        plugin.load(LoadContext(device=torch.device(device), options=dict(options or {})))
        return plugin
    raise PluginLoadError(f"no plugin {name!r} in the {ENTRY_POINT_GROUP!r} entry-point group")


def _check(ep: EntryPoint) -> type[Plugin]:
    try:
        obj = ep.load()
    except Exception as exc:  # any import-time error of third-party code is a load failure
        raise PluginLoadError(f"import of {ep.value} failed: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        raise PluginLoadError(f"{ep.value} is not a streamproc.plugin.Plugin subclass")
    missing = [a for a in ("name", "consumes", "produces") if not hasattr(obj, a)]
    if missing:
        raise PluginLoadError(f"{ep.value} lacks class attribute(s) {', '.join(missing)}")
    if getattr(obj, "__abstractmethods__", None):
        methods = ", ".join(sorted(obj.__abstractmethods__))
        raise PluginLoadError(f"{ep.value} does not implement {methods}")
    if obj.name != ep.name:
        raise PluginLoadError(f"entry point {ep.name!r} names a plugin called {obj.name!r}")
    return obj
