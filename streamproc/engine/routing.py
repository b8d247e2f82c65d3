"""Routes as configuration: which plugins receive each event type and each result kind.

A plugin receives what it ``consumes`` (its own default, or ``plugins.<name>.consumes``
from configuration). Result kinds chain: a plugin that consumes ``transcript`` receives
every transcript another plugin produces. Cycles are refused when the router is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streamproc.errors import ConfigError

MAX_CHAIN_DEPTH = 4
"""How many result-to-plugin hops one input event may take (transcript -> translation is 1)."""


@dataclass(frozen=True)
class PluginRoute:
    """One enabled plugin's place in the routing table."""

    plugin: str
    consumes: tuple[str, ...]
    produces: str
    output_topic: str


class Router:
    """Maps an event type or result kind to the plugins that receive it, in name order."""

    def __init__(self, routes: Iterable[PluginRoute]) -> None:
        self.routes: Mapping[str, PluginRoute] = {r.plugin: r for r in routes}
        table: dict[str, list[str]] = {}
        for route in sorted(self.routes.values(), key=lambda r: r.plugin):
            for source in route.consumes:
                table.setdefault(source, []).append(route.plugin)
        self._table = {k: tuple(v) for k, v in table.items()}
        self._check_acyclic()

    def plugins_for(self, type_or_kind: str) -> tuple[str, ...]:
        return self._table.get(type_or_kind, ())

    def output_topic(self, plugin: str) -> str:
        return self.routes[plugin].output_topic

    def _check_acyclic(self) -> None:
        def visit(plugin: str, path: tuple[str, ...]) -> None:
            if plugin in path:
                raise ConfigError(f"routes form a cycle: {' -> '.join((*path, plugin))}")
            for nxt in self.plugins_for(self.routes[plugin].produces):
                visit(nxt, (*path, plugin))

        for name in self.routes:
            visit(name, ())
