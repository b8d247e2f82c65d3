"""Small real plugins (torch tensors, batched) whose behaviour the engine tests can predict.

- ``echo``: every input event -> ``{"id", "type", "batch"}``; its ``echo`` results chain on.
- ``shout``: consumes ``echo`` results -> the echoed type in upper case (chaining).
- ``counter``: keyed state per user: how many playback events the user had (replays must
  not count twice).
- ``flaky``: uploads; refuses a title ``refuse`` in prepare, raises in infer on ``boom``,
  and exits its process in infer on the title ``options.crash_on`` (model processes only).
- ``slow``: audio; sleeps ``options.delay_s`` per batch (backpressure, SIGTERM drain), and
  ``options.hang_s`` more when the batch holds an event whose id starts with ``hang`` (a
  plugin that hangs, for the engine's timeout).
- ``media``: uploads and audio; decodes the image or WAV (corrupt media -> dead letter).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from streamproc.errors import InvalidInput
from streamproc.events import AudioEvent, Event, PlaybackEvent, UploadEvent
from streamproc.media import decode_image, decode_wav
from streamproc.plugin import BatchPolicy, LoadContext, Plugin


class _Base(Plugin):
    model_version = "test-1"

    def load(self, context: LoadContext) -> None:
        self.context = context

    def infer(self, batch: Sequence[Any]) -> Sequence[Any]:
        values = self.context.to_device(torch.tensor([float(len(x["id"])) for x in batch]))
        return [dict(x, batch=len(batch), size=float(v)) for x, v in zip(batch, values.cpu(), strict=True)]


class Echo(_Base):
    name = "echo"
    consumes = ("playback", "upload", "audio")
    produces = "echo"
    batch_policy = BatchPolicy(max_batch_size=16, max_wait_ms=5, max_queue=64)

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Any | None:
        return {"id": event.id, "type": event.type}

    def result(self, event: Event, output: Any) -> Mapping[str, Any]:
        return {"id": output["id"], "type": output["type"], "batch": output["batch"]}


class Shout(_Base):
    name = "shout"
    consumes = ("echo",)
    produces = "shout"

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Any | None:
        return {"id": event.id, "type": str(event.body["type"]).upper()}

    def result(self, event: Event, output: Any) -> Mapping[str, Any]:
        return {"shouted": output["type"]}


class Counter(_Base):
    name = "counter"
    consumes = ("playback",)
    produces = "count"

    def state_key(self, event: Event) -> str | None:
        return event.user_id if isinstance(event, PlaybackEvent) else None

    def update_state(self, state: Mapping[str, Any] | None, event: Event) -> Mapping[str, Any]:
        count = int((state or {}).get("count", 0))
        return {"count": count + 1, "last": event.id}

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Any | None:
        return {"id": event.id, "count": int((state or {})["count"])}

    def result(self, event: Event, output: Any) -> Mapping[str, Any]:
        return {"count": output["count"]}


class Flaky(_Base):
    name = "flaky"
    consumes = ("upload",)
    produces = "flaky"

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Any | None:
        assert isinstance(event, UploadEvent)
        if event.title == "refuse":
            raise InvalidInput("title: 'refuse' is refused by the flaky test plugin")
        return {"id": event.id, "title": event.title}

    def infer(self, batch: Sequence[Any]) -> Sequence[Any]:
        if any(x["title"] == "boom" for x in batch):
            raise RuntimeError("boom: the flaky test plugin failed")
        crash_on = self.context.options.get("crash_on")
        if crash_on and any(x["title"] == crash_on for x in batch):
            os._exit(70)  # a native crash: only ever configured for model processes
        return super().infer(batch)

    def result(self, event: Event, output: Any) -> Mapping[str, Any]:
        return {"title": output["title"]}


class Slow(_Base):
    name = "slow"
    consumes = ("audio",)
    produces = "slow"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=4, max_wait_ms=1, max_queue=8)

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Any | None:
        return {"id": event.id}

    def infer(self, batch: Sequence[Any]) -> Sequence[Any]:
        delay = float(self.context.options.get("delay_s", 0.2))
        if any(x["id"].startswith("hang") for x in batch):
            delay += float(self.context.options.get("hang_s", 0.0))
        time.sleep(delay)
        return super().infer(batch)

    def result(self, event: Event, output: Any) -> Mapping[str, Any]:
        return {"id": output["id"]}


class Media(_Base):
    name = "media"
    consumes = ("upload", "audio")
    produces = "media"

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Any | None:
        if isinstance(event, UploadEvent) and event.image is not None:
            return {"id": event.id, "size": list(decode_image(event.image).size)}
        if isinstance(event, AudioEvent) and event.audio is not None:
            return {"id": event.id, "samples": int(decode_wav(event.audio).size)}
        return None

    def result(self, event: Event, output: Any) -> Mapping[str, Any]:
        return {k: v for k, v in output.items() if k in ("size", "samples")}
