"""What the worker writes: result records and dead letters, and their wire format (JSON)."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_MAX_ORIGINAL_BYTES = 8 * 1024 * 1024
"""Originals up to this size travel whole in their dead letter (base64: 4/3 of it)."""
ORIGINAL_PREFIX_BYTES = 64 * 1024
DEFAULT_MAX_RESULT_BYTES = 4 * 1024 * 1024
"""The default of ``limits.max_result_bytes``: the largest result body (JSON) a plugin may return."""
MEMORY_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def now_ms() -> int:
    return int(time.time() * 1000)


DeadLetterStage = Literal["decode", "state", "prepare", "infer", "timeout", "result", "identity", "sink", "engine"]
"""Where an event was refused; every dead letter names one."""

DEAD_LETTER_STAGES: Mapping[DeadLetterStage, str] = {
    "decode": "the record is not a valid event: not UTF-8 JSON, unknown type, a bad field, a payload limit",
    "state": "the plugin's state_key or update_state failed for this event",
    "prepare": "the plugin refused the event (InvalidInput, MediaError) or its prepare raised",
    "infer": "the model failed on this event alone, after its batch failed",
    "timeout": "the event's batch ran longer than infer_timeout_s",
    "result": "the result body failed, is not strict JSON, or exceeds limits.max_result_bytes",
    "identity": "another input was already published under the same event id and plugin (ids must be unique)",
    "sink": "Kafka refused the event's result for good (too large for the topic, not authorised); Redis has it",
    "engine": "the engine itself failed on the record (a bug); the record is kept, not lost",
}
"""Each stage and what it means (listed in the README; a test keeps them in step)."""


@dataclass(frozen=True)
class SourceRecord:
    """One consumed Kafka record, as the engine sees it. ``ack`` marks it safe to commit."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    """``None`` for a tombstone."""
    timestamp_ms: int | None = None

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}@{self.offset}"


def input_digest(value: bytes | None) -> str:
    """A short digest of an input record's value (SHA-256, 128 bits in hex)."""
    return hashlib.sha256(value or b"").hexdigest()[:32]


def encode_body(body: Mapping[str, Any]) -> str:
    """A result body as strict JSON. Raises ``TypeError`` for values JSON cannot hold (a
    tensor, an array, bytes) and ``ValueError`` for NaN or infinite numbers."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class ResultRecord:
    """One plugin result for one input event; keyed like its input.

    ``body_json`` is the body already encoded by ``encode_body`` (the runtime encodes and
    checks every body once, where a bad one can still fail only its own event); empty, the
    body is encoded when the record is."""

    event_id: str
    plugin: str
    model_version: str
    kind: str
    key: str
    event_ts: int
    result_ts: int
    body: Mapping[str, Any]
    body_json: str = ""
    input_digest: str = ""
    """``input_digest`` of the input record: tells a replay of it from another input reusing its id."""

    @functools.cached_property
    def _wire(self) -> bytes:
        head = {
            "event_id": self.event_id,
            "plugin": self.plugin,
            "model_version": self.model_version,
            "kind": self.kind,
            "key": self.key,
            "event_ts": self.event_ts,
            "result_ts": self.result_ts,
        }
        envelope = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
        return f'{envelope[:-1]},"body":{self.body_json or encode_body(self.body)}}}'.encode()

    def to_json(self) -> bytes:
        """The record as JSON bytes, as written to Redis and Kafka: encoded once, on first use."""
        return self._wire


@dataclass(frozen=True)
class DeadLetter:
    """A refused event: the original bytes, the reason, the stage and plugin that refused it.

    ``event_id`` and ``event_type`` are known for valid events and peeked from the JSON of
    invalid ones when possible, so an operator can find the producer's record."""

    source: SourceRecord
    stage: DeadLetterStage
    reason: str
    plugin: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    refused_ts: int = field(default_factory=now_ms)

    def to_json(self, max_original_bytes: int = DEFAULT_MAX_ORIGINAL_BYTES) -> bytes:
        """The dead letter's wire form. An original of more than ``max_original_bytes`` is
        replaced by its size, SHA-256 and first bytes (at most ``ORIGINAL_PREFIX_BYTES``; ``original_truncated``),
        so the dead letter always fits the topic."""
        value = self.source.value
        doc: dict[str, Any] = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "stage": self.stage,
            "plugin": self.plugin,
            "reason": clean_reason(self.reason),
            "topic": self.source.topic,
            "partition": self.source.partition,
            "offset": self.source.offset,
            "key": self.source.key.decode("utf-8", "replace") if self.source.key is not None else None,
            "refused_ts": self.refused_ts,
            "original_bytes": None if value is None else len(value),
            "original_truncated": value is not None and len(value) > max_original_bytes,
        }
        if value is None:
            doc["original"] = None
        elif len(value) > max_original_bytes:
            doc["original"] = base64.b64encode(value[: min(ORIGINAL_PREFIX_BYTES, max_original_bytes)]).decode()
            doc["original_sha256"] = hashlib.sha256(value).hexdigest()
        else:
            doc["original"] = base64.b64encode(value).decode("ascii")
        return json.dumps(doc, separators=(",", ":")).encode()


def clean_reason(text: str, limit: int = 1000) -> str:
    """A reason fit for people and logs: no memory addresses (``<Foo object at 0x7f..>``
    differs on every run and groups nothing), at most ``limit`` characters."""
    return MEMORY_ADDRESS.sub("", text)[:limit]
