"""The naive baseline of ``streamproc bench``: the Faust agent a team writes by hand.

One event at a time, on the event loop: decode it, and for every plugin routed to it
call ``prepare``, ``infer([x])`` (a batch of one, under inference mode) and ``result``,
then await one Redis ``SET`` of the latest result and one Kafka send (``acks=all``,
awaited until acknowledged) per result; chained results (transcript -> translator) are
handled the same way, inline. Keyed plugin state lives in a dict in memory (cheaper
than the engine's Redis-backed, replay-safe state: it flatters the baseline). Faust
acks each record after the loop body, as its default agents do.

It shares the worker's plugin loading (devices, threads, settings) and result record
format, nothing else. Run as ``python -m streamproc.bench.naive`` with the settings in
``STREAMPROC_CONFIG_FILE``; stop it with SIGTERM.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import faust
import torch
from redis.asyncio import Redis

from streamproc.config import load_settings
from streamproc.engine.keys import RedisKeys
from streamproc.engine.routing import MAX_CHAIN_DEPTH, Router
from streamproc.engine.runtime import PluginRuntime
from streamproc.errors import InvalidEvent
from streamproc.events import DerivedEvent, Event, PayloadLimits, decode_event
from streamproc.ops.logs import configure_logging
from streamproc.records import ResultRecord, now_ms
from streamproc.registry import build_router, load_plugins

log = logging.getLogger("streamproc.bench.naive")


@dataclass
class Baseline:
    """What the hand-written baselines share: plugins and routes loaded as the worker loads
    them, a Faust app reading the input topics, its output topics, Redis."""

    runtimes: Mapping[str, PluginRuntime]
    router: Router
    app: faust.App
    source: faust.TopicT
    outputs: Mapping[str, faust.TopicT]
    redis: Redis
    keys: RedisKeys
    limits: PayloadLimits

    def apply_state(self, name: str, event: Event, states: dict[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """Plugin ``name``'s state after ``event``, kept in ``states`` (in memory: cheaper than
        the engine's replay-safe Redis state, which flatters the baselines)."""
        plugin = self.runtimes[name].plugin
        key = plugin.state_key(event)
        if key is None:
            return None
        states[f"{name}:{key}"] = dict(plugin.update_state(states.get(f"{name}:{key}"), event))
        return states[f"{name}:{key}"]

    def record(self, name: str, event: Event, body: Mapping[str, Any]) -> ResultRecord:
        """The result record of plugin ``name`` for ``event``, in the worker's format."""
        plugin = self.runtimes[name].plugin
        return ResultRecord(event.id, name, plugin.model_version, plugin.produces, event.key, event.ts, now_ms(), body)


def baseline(label: str) -> Baseline:
    """Load settings and plugins and build the Faust app of a baseline named ``label``."""
    settings = load_settings()
    datadir = tempfile.mkdtemp(prefix=f"streamproc-{label}-")  # Faust's state folder; nothing kept
    atexit.register(shutil.rmtree, datadir, True)
    configure_logging(settings.log_level, settings.log_format)
    runtimes, _ = load_plugins(settings)
    router = build_router(settings, runtimes)
    kafka = settings.kafka
    app = faust.App(
        kafka.consumer_group or settings.app_id,
        broker=[f"kafka://{b}" for b in kafka.bootstrap.split(",")],
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=kafka.partitions,
        consumer_auto_offset_reset=kafka.auto_offset_reset,
        web_enabled=False,
        producer_acks=-1,
        store="memory://",
        datadir=datadir,
    )
    return Baseline(
        runtimes,
        router,
        app,
        app.topic(*sorted(set(kafka.input_topics.values())), key_type=bytes, value_type=bytes),
        {name: app.topic(router.output_topic(name), key_type=bytes, value_type=bytes) for name in runtimes},
        Redis.from_url(settings.redis.url),
        RedisKeys(settings.redis.key_prefix),
        settings.limits.payload_limits(),
    )


def build_app() -> faust.App:
    base = baseline("naive")
    states: dict[str, Mapping[str, Any]] = {}

    async def handle(event: Event, depth: int) -> None:
        for name in base.router.plugins_for(event.type):
            plugin = base.runtimes[name].plugin
            state = base.apply_state(name, event, states)
            try:
                prepared = plugin.prepare(event, state)
                if prepared is None:
                    continue
                with torch.inference_mode():
                    output = plugin.infer([prepared])[0]
                body = dict(plugin.result(event, output))
            except Exception as exc:
                log.warning("plugin %s failed on %s: %s", name, event.id, exc)
                continue
            record = base.record(name, event, body)
            payload = record.to_json()
            await base.redis.set(base.keys.latest(record.kind, record.key), payload)
            sent = await base.outputs[name].send(key=record.key.encode(), value=payload, force=True)
            await sent
            if depth < MAX_CHAIN_DEPTH:
                origin = event.origin if isinstance(event, DerivedEvent) else event
                await handle(DerivedEvent(type=plugin.produces, plugin=name, body=body, origin=origin), depth + 1)

    @base.app.agent(base.source, name="naive")
    async def process(stream: faust.StreamT) -> None:
        async for value in stream:
            try:
                event = decode_event(value, base.limits)
            except InvalidEvent as exc:
                log.warning("refused: %s", exc.reason)
                continue
            await handle(event, 0)

    return base.app


def run(app: faust.App) -> None:
    """Run a baseline's Faust worker until SIGTERM."""
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


def main() -> None:
    run(build_app())


if __name__ == "__main__":
    main()
