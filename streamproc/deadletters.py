"""Dead letters for operators: read, filter, show and replay (``streamproc dead-letters``).

The dead-letter topic (``kafka.dead_letter_topic``) holds one JSON document per refused
event (``streamproc.records.DeadLetter.to_json``): the reason, the stage, the plugin, where
the record came from (topic, partition, offset, key) and its original bytes. Reading
takes no consumer group: every partition is read from the start to the end offsets seen
when the read began, so listing never moves anyone's committed offsets.

Replay sends the original bytes, with the original key, to the original topic, once per
event: several dead letters of one event (one per refusing plugin) are one replay. The
worker publishes a result once per plugin and event id, so replaying an event whose other
plugins already answered, or replaying twice, publishes nothing twice; an event that is
still refused becomes a new dead letter. Letters without their whole original (a
tombstone, or an original too large for the topic, kept as size, hash and prefix) cannot
be replayed and are reported as skipped.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamproc.config import Settings
from streamproc.errors import StreamprocError
from streamproc.kafka_clients import kafka_python_options

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DeadLetterError(StreamprocError):
    """A dead-letter command cannot do what was asked (bad filter, letter not found)."""


@dataclass(frozen=True)
class Letter:
    """One dead letter as read from the topic: where it sits and its document."""

    partition: int
    offset: int
    doc: dict[str, Any]

    @property
    def ref(self) -> str:
        """How ``show`` names it: ``<partition>@<offset>``."""
        return f"{self.partition}@{self.offset}"

    @property
    def replayable(self) -> bool:
        return self.doc.get("original") is not None and not self.doc.get("original_truncated")

    def original(self) -> bytes:
        return base64.b64decode(self.doc["original"])

    def line(self) -> str:
        """One line for ``list``: position, time, stage, plugin, event id, reason."""
        when = datetime.fromtimestamp(self.doc.get("refused_ts", 0) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        reason = self.doc.get("reason", "")
        return (
            f"{self.ref:<10} {when} {self.doc.get('stage', '?'):<8} {self.doc.get('plugin') or '-':<12} "
            f"{self.doc.get('event_id') or '-':<24} {reason[:160]}"
        )


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters a command applies to; unset fields match everything."""

    stage: str | None = None
    plugin: str | None = None
    reason: str | None = None
    """A case-insensitive substring of the reason."""
    event_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, letter: Letter) -> bool:
        doc = letter.doc
        refused = doc.get("refused_ts") or 0
        return (
            (self.stage is None or doc.get("stage") == self.stage)
            and (self.plugin is None or doc.get("plugin") == self.plugin)
            and (self.reason is None or self.reason.lower() in str(doc.get("reason", "")).lower())
            and (self.event_id is None or doc.get("event_id") == self.event_id)
            and (self.since_ms is None or refused >= self.since_ms)
            and (self.until_ms is None or refused <= self.until_ms)
        )


def parse_time(text: str, now_ms: int | None = None) -> int:
    """Epoch milliseconds of ``15m``/``2h``/``1d`` ago, or of an ISO 8601 time (UTC unless
    it says otherwise). Raises ``DeadLetterError`` naming the accepted forms."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    relative = DURATION.match(text.strip())
    if relative:
        return now_ms - int(float(relative.group(1)) * UNIT_S[relative.group(2)] * 1000)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DeadLetterError(f"time {text!r}: use a duration ago (30s, 15m, 2h, 1d) or ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def read_letters(settings: Settings, timeout_s: float = 30.0) -> list[Letter]:
    """Every dead letter on the topic now, in partition and offset order (no consumer group)."""
    topic = settings.kafka.dead_letter_topic
    consumer = KafkaConsumer(
        **kafka_python_options(settings.kafka),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=settings.kafka.max_message_bytes,
        max_partition_fetch_bytes=settings.kafka.max_message_bytes,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return []
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        letters: list[Letter] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in assigned):
            if time.monotonic() > deadline:
                raise DeadLetterError(f"reading {topic} did not reach its end within {timeout_s:.0f} s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                letters += [Letter(tp.partition, r.offset, _document(r.value)) for r in records if r.offset < end[tp]]
        return sorted(letters, key=lambda letter: (letter.partition, letter.offset))
    finally:
        consumer.close()


def _document(value: bytes | None) -> dict[str, Any]:
    try:
        doc = json.loads(value or b"")
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return {"stage": "?", "reason": "not a dead-letter document (written by another producer?)"}
    return doc


def select(letters: Iterable[Letter], wanted: LetterFilter) -> list[Letter]:
    return [letter for letter in letters if wanted.matches(letter)]


def find(letters: Iterable[Letter], ref: str) -> Letter:
    """The letter at ``<partition>@<offset>``, or the first one of event id ``ref``."""
    for letter in letters:
        if letter.ref == ref or letter.doc.get("event_id") == ref:
            return letter
    raise DeadLetterError(f"no dead letter {ref!r} (a <partition>@<offset> from `list`, or an event id)")


def show(letter: Letter) -> str:
    """The letter's document, with its original decoded when it is UTF-8 JSON."""
    doc = dict(letter.doc)
    if letter.replayable:
        original = letter.original()
        try:
            doc["original"] = json.loads(original)
        except ValueError:
            doc["original"] = f"<{len(original)} bytes, not UTF-8 JSON; base64 in the topic>"
    doc = {"ref": letter.ref, **doc}
    return json.dumps(_elide(doc), indent=2, ensure_ascii=False)


def _elide(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 200:
        return f"<{len(value)} chars>"
    if isinstance(value, dict):
        return {k: _elide(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_elide(v) for v in value]
    return value


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did: events sent, and letters skipped with the reason."""

    sent: list[Letter]
    skipped: list[tuple[Letter, str]]


def plan_replay(letters: Iterable[Letter]) -> ReplayReport:
    """One send per event: letters of an event already planned, and letters without their
    whole original, are skipped with the reason."""
    sent: list[Letter] = []
    skipped: list[tuple[Letter, str]] = []
    planned: set[tuple[str, ...]] = set()
    for letter in letters:
        doc = letter.doc
        identity = (
            ("event", str(doc["event_id"]), str(doc.get("topic")))
            if doc.get("event_id")
            else ("record", str(doc.get("topic")), str(doc.get("partition")), str(doc.get("offset")))
        )
        if not letter.replayable:
            skipped.append((letter, "original not kept whole (tombstone, or too large for the topic)"))
        elif identity in planned:
            skipped.append((letter, "same event as an earlier letter: replayed once"))
        else:
            planned.add(identity)
            sent.append(letter)
    return ReplayReport(sent, skipped)


def replay(settings: Settings, report: ReplayReport) -> None:
    """Send each planned letter's original, with its key, to its original topic; wait for acks."""
    producer = KafkaProducer(
        **kafka_python_options(settings.kafka), acks="all", max_request_size=settings.kafka.max_message_bytes
    )
    try:
        futures = [
            producer.send(
                letter.doc["topic"],
                key=None if letter.doc.get("key") is None else str(letter.doc["key"]).encode(),
                value=letter.original(),
            )
            for letter in report.sent
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()
