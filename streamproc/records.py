"""What the worker writes: result records and dead letters, and their wire format (JSON)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SourceRecord:
    """One consumed Kafka record, as the engine sees it. ``ack`` marks it safe to commit."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}@{self.offset}"


@dataclass(frozen=True)
class ResultRecord:
    """One plugin result for one input event; keyed like its input."""

    event_id: str
    plugin: str
    model_version: str
    kind: str
    key: str
    event_ts: int
    result_ts: int
    body: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "plugin": self.plugin,
            "model_version": self.model_version,
            "kind": self.kind,
            "key": self.key,
            "event_ts": self.event_ts,
            "result_ts": self.result_ts,
            "body": self.body,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class DeadLetter:
    """A refused event: the original bytes, the reason, the stage and plugin that refused it."""

    source: SourceRecord
    stage: str
    reason: str
    plugin: str | None = None
    event_id: str | None = None
    refused_ts: int = 0

    def to_json(self) -> bytes:
        doc = {
            "event_id": self.event_id,
            "stage": self.stage,
            "plugin": self.plugin,
            "reason": self.reason,
            "topic": self.source.topic,
            "partition": self.source.partition,
            "offset": self.source.offset,
            "key": self.source.key.decode("utf-8", "replace") if self.source.key is not None else None,
            "refused_ts": self.refused_ts,
            "original": base64.b64encode(self.source.value).decode("ascii"),
        }
        return json.dumps(doc, separators=(",", ":")).encode()
