"""Plugins: discovery through the ``streamproc.plugins`` entry-point group, loading, the
load report, and the routing table built from configuration.

Every installed distribution that registers a ``Plugin`` subclass there is found the same
way, bundled or third-party (pytest/pluggy style). Discovery never raises for one bad
plugin: ``load_plugins`` reports which plugins loaded and which failed, and why, so one
broken plugin does not stop the others (unless the settings ask to fail fast). A plugin
is refused when it was written for a plugin API version this engine does not support,
or when its configured options do not validate against its ``Options`` model.

Routes are data: a plugin's routes are ``plugins.<name>.consumes`` when configured, else
the plugin class's ``consumes``; they live in the ``Router``, never in the plugin.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from streamproc.config import PluginSettings, Settings
from streamproc.engine.routing import PluginRoute, Router
from streamproc.engine.runtime import PluginRuntime, choose_autocast, choose_device, configure_cpu_threads
from streamproc.errors import ConfigError, PluginLoadError
from streamproc.plugin import ENTRY_POINT_GROUP, SUPPORTED_API_VERSIONS, LoadContext, Plugin

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


@dataclass(frozen=True)
class PluginReport:
    """One line of ``streamproc plugins``: a loaded plugin or a failure with its reason."""

    name: str
    distribution: str
    version: str
    consumes: tuple[str, ...]
    produces: str
    device: str
    model_version: str
    error: str | None = None


def discover() -> tuple[list[DiscoveredPlugin], list[PluginFailure]]:
    """Import every entry point of the group and check it is a well-formed plugin class."""
    found: list[DiscoveredPlugin] = []
    failures: list[PluginFailure] = []
    seen: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        try:
            cls = check_entry_point(ep)
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


def validated_options(cls: type[Plugin], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked against the plugin's ``Options`` model (defaults filled in), or
    returned as given when it declares none. Raises ``ConfigError`` naming the option."""
    if cls.Options is None:
        return dict(options)
    try:
        return cls.Options.model_validate(dict(options)).model_dump()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = "".join(f".{p}" for p in first["loc"])
        raise ConfigError(f"plugins.{cls.name}.options{where}: {first['msg']}") from None


def configured_routes(cls: type[Plugin], settings: PluginSettings) -> tuple[str, ...]:
    """What the plugin receives: its configured ``consumes``, else the class default."""
    return tuple(settings.consumes or cls.consumes)


def load_plugin(name: str, options: Mapping[str, Any] | None = None, device: str = "cpu") -> Plugin:
    """One installed plugin, found through its entry point as the worker finds it, with its
    options validated as the worker validates them, loaded on ``device`` (for tests and
    tools). Raises ``PluginLoadError`` when no entry point has that name, ``ConfigError``
    for bad options, and whatever the plugin's ``load`` raises."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        cls = check_entry_point(ep)
        plugin = cls()
        plugin.load(LoadContext(device=torch.device(device), options=validated_options(cls, options or {})))
        return plugin
    raise PluginLoadError(f"no plugin {name!r} in the {ENTRY_POINT_GROUP!r} entry-point group")


def is_stateful(cls: type[Plugin]) -> bool:
    """Whether the plugin keeps keyed state (defines ``state_key``): the engine applies its
    ``update_state`` in the worker process, so it is loaded there even with model processes."""
    return cls.state_key is not Plugin.state_key


def load_plugins(
    settings: Settings, load_models: bool = True, stateless_models: bool = True
) -> tuple[dict[str, PluginRuntime], list[PluginReport]]:
    """Discover, configure and (optionally) load every enabled plugin; with
    ``stateless_models`` False only stateful plugins are loaded (the others' models live
    in model processes).

    A plugin that fails to import, validate its options or load, and a name in
    ``enabled_plugins`` that no installed distribution provides, is reported and left
    out; with ``settings.fail_fast`` the first failure raises ``PluginLoadError`` instead.
    """
    device = choose_device(settings.device)
    autocast = choose_autocast(device, settings.precision)
    discovered, failures = discover()
    if device.type == "cpu":
        enabled = sum(1 for found in discovered if settings.plugin_enabled(found.name))
        configure_cpu_threads(settings.cpu_threads, plugin_threads=enabled)
    reports = [
        PluginReport(f.name, f.distribution, "?", (), "?", "-", "-", f.reason)
        for f in failures
        if settings.plugin_enabled(f.name)
    ]
    installed = {p.name for p in discovered} | {f.name for f in failures}
    reports += [
        PluginReport(name, "?", "?", (), "?", "-", "-", f"not installed: no {ENTRY_POINT_GROUP!r} entry point")
        for name in settings.enabled_plugins or ()
        if name not in installed
    ]
    runtimes: dict[str, PluginRuntime] = {}
    for found in discovered:
        if not settings.plugin_enabled(found.name):
            continue
        plugin_settings = settings.plugin(found.name)
        plugin = found.cls()
        error = None
        try:
            options = validated_options(found.cls, plugin_settings.options)
        except ConfigError as exc:
            error, options = str(exc), {}
        runtime = PluginRuntime(
            plugin,
            plugin_settings,
            device,
            autocast,
            settings.infer_retries,
            options,
            settings.limits.max_result_bytes,
            settings.max_abandoned_threads,
        )
        if load_models and (stateless_models or is_stateful(found.cls)) and error is None:
            try:
                runtime.load()
            except Exception as exc:  # third-party load code: report, go on
                error = f"load failed: {type(exc).__name__}: {exc}"
        if error is None:
            runtimes[found.name] = runtime
        reports.append(
            PluginReport(
                found.name,
                found.distribution,
                found.version,
                configured_routes(found.cls, plugin_settings),
                found.cls.produces,
                str(device),
                plugin.model_version,
                error,
            )
        )
    broken = [r for r in reports if r.error]
    if broken and settings.fail_fast:
        raise PluginLoadError("; ".join(f"{r.name}: {r.error}" for r in broken))
    for report in broken:
        log.error("plugin %s not loaded: %s", report.name, report.error)
    return runtimes, reports


def build_router(settings: Settings, runtimes: Mapping[str, PluginRuntime]) -> Router:
    """The routing table of the loaded plugins: configured routes and output topics."""
    routes = []
    for name, runtime in runtimes.items():
        plugin_settings = settings.plugin(name)
        output = plugin_settings.output_topic or f"{settings.kafka.output_topic_prefix}{runtime.produces}"
        consumes = configured_routes(type(runtime.plugin), plugin_settings)
        routes.append(PluginRoute(name, consumes, runtime.produces, output))
    return Router(routes)


def options_reference() -> list[tuple[str, type[BaseModel]]]:
    """Every discovered plugin that declares an ``Options`` model, by name."""
    found, _ = discover()
    return [(p.name, p.cls.Options) for p in found if p.cls.Options is not None]


def check_entry_point(ep: EntryPoint) -> type[Plugin]:
    """The plugin class an entry point names, checked: a ``Plugin`` subclass with its class
    attributes, every abstract method implemented, named like its entry point, written for
    a supported API version. Raises ``PluginLoadError`` with the reason otherwise."""
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
    if obj.api_version not in SUPPORTED_API_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_API_VERSIONS))
        raise PluginLoadError(
            f"{ep.value} is written for plugin API version {obj.api_version!r}; this engine supports {supported}"
        )
    return obj
