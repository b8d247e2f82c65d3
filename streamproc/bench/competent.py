"""The competent baseline of ``streamproc bench``: a Faust agent written well with Faust's own tools.

What a capable team writes in an afternoon, without streamproc's engine: the agent takes
batches with ``stream.take(max_batch, within=max_wait)`` (the largest batch and wait of
the routed plugins' policies), decodes them, keeps keyed state in a dict, and per plugin
calls ``prepare`` per event and one batched ``infer`` on a worker thread (heartbeats go on
meanwhile), then ``result`` per event; all results of a batch go to Redis in one
pipelined round trip (a ``SET`` of the latest result each) and to Kafka with sends that
are not awaited one by one (every acknowledgement awaited at the end of the batch).
Chained results (transcript -> translator) are a next wave of the same batch. Faust acks
the batch's records when the loop body ends.

Like the naive baseline it has no dead-letter topic, no replay-safe state, no ordered
commits and no metrics: it flatters itself against the worker. Run as
``python -m streamproc.bench.competent`` with the settings in ``STREAMPROC_CONFIG_FILE``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import faust
import torch

from streamproc.bench.naive import Baseline, baseline, run
from streamproc.engine.routing import MAX_CHAIN_DEPTH
from streamproc.errors import InvalidEvent
from streamproc.events import DerivedEvent, Event, decode_event
from streamproc.records import ResultRecord

log = logging.getLogger("streamproc.bench.competent")


def _infer(plugin: Any, inputs: list[Any]) -> Sequence[Any]:
    with torch.inference_mode():
        return plugin.infer(inputs)


async def _wave(
    base: Baseline, events: list[Event], states: dict[str, Mapping[str, Any]]
) -> tuple[list[ResultRecord], list[Event]]:
    """Every plugin routed to ``events``, one batched ``infer`` each: results and chained events."""
    records: list[ResultRecord] = []
    chained: list[Event] = []
    for name, runtime in base.runtimes.items():
        plugin = runtime.plugin
        mine = [e for e in events if name in base.router.plugins_for(e.type)]
        ready: list[tuple[Event, Any]] = []
        for event in mine:
            try:
                prepared = plugin.prepare(event, base.apply_state(name, event, states))
            except Exception as exc:
                log.warning("plugin %s refused %s: %s", name, event.id, exc)
                continue
            if prepared is not None:
                ready.append((event, prepared))
        if not ready:
            continue
        try:
            outputs = await asyncio.to_thread(_infer, plugin, [prepared for _, prepared in ready])
        except Exception as exc:
            log.warning("plugin %s failed on a batch of %d: %s", name, len(ready), exc)
            continue
        for (event, _), output in zip(ready, outputs, strict=True):
            body = dict(plugin.result(event, output))
            records.append(base.record(name, event, body))
            origin = event.origin if isinstance(event, DerivedEvent) else event
            chained.append(DerivedEvent(type=plugin.produces, plugin=name, body=body, origin=origin))
    return records, chained


def build_app() -> faust.App:
    base = baseline("competent")
    states: dict[str, Mapping[str, Any]] = {}
    policies = [runtime.policy for runtime in base.runtimes.values()]
    max_batch = max((p.max_batch_size for p in policies), default=32)
    within = max((p.max_wait_ms for p in policies), default=5.0) / 1000

    async def publish(records: list[ResultRecord]) -> None:
        pipe = base.redis.pipeline(transaction=False)
        for record in records:
            pipe.set(base.keys.latest(record.kind, record.key), record.to_json())
        await pipe.execute()
        sent = [await base.outputs[r.plugin].send(key=r.key.encode(), value=r.to_json(), force=True) for r in records]
        await asyncio.gather(*sent)

    @base.app.agent(base.source, name="competent")
    async def process(stream: faust.StreamT) -> None:
        async for values in stream.take(max_batch, within=max(within, 0.001)):
            events: list[Event] = []
            for value in values:
                try:
                    events.append(decode_event(value, base.limits))
                except InvalidEvent as exc:
                    log.warning("refused: %s", exc.reason)
            records: list[ResultRecord] = []
            for _ in range(MAX_CHAIN_DEPTH + 1):
                if not events:
                    break
                wave, events = await _wave(base, events, states)
                records.extend(wave)
            if records:
                await publish(records)

    return base.app


def main() -> None:
    run(build_app())


if __name__ == "__main__":
    main()
