"""Producing events to Kafka (``streamproc produce``): demo events or a JSON-lines file."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from kafka import KafkaProducer

from streamproc.config import Settings
from streamproc.dev.demo_events import DemoRecord
from streamproc.kafka_clients import kafka_python_options


class ProgressBar:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self.started = time.monotonic()
        self._tty = sys.stderr.isatty()
        self._last_line = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self._tty or now - self._last_line >= 2.0 or self.done >= self.total:
            self._last_line = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        share = min(1.0, self.done / self.total)
        rate = self.done / max(now - self.started, 1e-6)
        bar = "#" * int(share * 30)
        line = f"{self.label} [{bar:<30}] {self.done}/{self.total} ({rate:.0f}/s)"
        if self._tty:
            sys.stderr.write("\r" + line + ("\n" if self.done >= self.total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def file_records(path: Path, settings: Settings) -> Iterator[DemoRecord]:
    """Records from a JSON-lines file: one event per line, keyed by its type's key field."""
    key_fields = {"playback": "user_id", "upload": "upload_id", "audio": "audio_id"}
    with path.open("rb") as lines:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                doc = json.loads(line)
                key = str(doc.get(key_fields.get(doc.get("type"), "user_id"), "")) or None
                event_type, event_id = str(doc.get("type")), doc.get("id")
            except (json.JSONDecodeError, AttributeError):
                key, event_type, event_id = None, "invalid", None  # sent as is: the worker refuses it
            yield DemoRecord(key.encode() if key else None, line, event_id, event_type)


def produce(
    settings: Settings, records: Iterable[DemoRecord], total: int, topic_for_type: dict[str, str]
) -> dict[str, int]:
    """Send records with ``acks=all``; returns counts per event type. Shows progress."""
    producer = KafkaProducer(
        **kafka_python_options(settings.kafka),
        acks="all",
        linger_ms=5,
        max_request_size=settings.kafka.max_message_bytes,
        retries=5,
    )
    default_topic = topic_for_type.get("playback") or next(iter(topic_for_type.values()))
    counts: dict[str, int] = {}
    bar = ProgressBar(total, "producing")
    futures = []
    try:
        for record in records:
            topic = topic_for_type.get(record.event_type, default_topic)
            futures.append(producer.send(topic, key=record.key, value=record.value))
            counts[record.event_type] = counts.get(record.event_type, 0) + 1
            bar.advance()
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()
    return counts
