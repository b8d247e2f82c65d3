"""Producing events to Kafka (``streamproc produce``): demo events or a JSON-lines file.

Every client option comes from ``kafka_python_options``: SASL and TLS as the worker uses
them. A file's lines are checked by the worker's decoder first; bad lines are reported
with their number and reason and not sent, the good ones all are."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kafka import KafkaProducer

from streamproc.config import Settings
from streamproc.dev.demo_events import DemoRecord
from streamproc.errors import InputFileError, InvalidEvent
from streamproc.events import decode_event
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


@dataclass(frozen=True)
class BadLine:
    """A line of a JSON-lines file that is not an event the worker would accept."""

    number: int
    reason: str

    def describe(self) -> str:
        return f"line {self.number}: {self.reason}"


def check_readable(path: Path) -> None:
    """``path`` opens for reading, else ``InputFileError`` naming it and the reason (no such
    file, a directory, permission denied): checked before any connection is made."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def file_records(path: Path, settings: Settings) -> Iterator[DemoRecord | BadLine]:
    """Each non-blank line of a JSON-lines file, checked by the worker's own decoder: a
    record keyed as the worker keys its type, or a ``BadLine`` with the decoder's reason
    (not UTF-8, not JSON, nested too deeply, a list as ``type``, over the record size
    limit...). A line longer than the limit is skipped without being held in memory."""
    limits = settings.limits.payload_limits()
    with path.open("rb") as lines:
        for number, line in enumerate(_bounded_lines(lines, limits.max_record_bytes), start=1):
            if isinstance(line, int):
                yield BadLine(number, f"record: {line} bytes exceeds the limit of {limits.max_record_bytes}")
                continue
            line = line.strip()
            if not line:
                continue
            try:
                event = decode_event(line, limits)
            except InvalidEvent as exc:
                yield BadLine(number, exc.reason)
                continue
            yield DemoRecord(event.key.encode(), line, event.id, event.type)


def _bounded_lines(stream: BinaryIO, max_bytes: int) -> Iterator[bytes | int]:
    """The lines of ``stream``, or for a line over ``max_bytes`` (newline not counted) its
    length instead, read in chunks and dropped."""
    while True:
        line = stream.readline(max_bytes + 2)
        if not line:
            return
        if len(line.rstrip(b"\r\n")) <= max_bytes:
            yield line
            continue
        size = len(line)
        while not line.endswith(b"\n"):
            line = stream.readline(1024 * 1024)
            if not line:
                break
            size += len(line)
        yield size - 1 if line.endswith(b"\n") else size


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
