"""The benchmark's workloads: demo events chosen for a plugin, on disk, re-stamped when sent.

A workload is a list of ``WorkloadRecord``: the Kafka key and value of one demo event
(``streamproc.dev.demo_events``: real images, synthesised speech, playback of real item ids),
its type and id, and how many results the offline run of the same plugins gave for it
(``results``; the readers use it to tell when an event is complete). Workloads travel
between the benchmark's processes as JSON lines. ``stamp`` gives a record a new event
time and a unique id when it is sent again (paced runs cycle through a workload).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from streamproc.dev.demo_events import demo_records

_TS_FIELD = re.compile(rb'"ts": ?\d+')
_ID_FIELD = re.compile(rb'"id": ?"')


@dataclass(frozen=True)
class WorkloadRecord:
    """One event of a workload and the number of results it yields (0: unknown or none)."""

    key: bytes | None
    value: bytes
    event_id: str
    event_type: str
    results: int = 1

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key.decode() if self.key is not None else None,
                "value": self.value.decode(),
                "id": self.event_id,
                "type": self.event_type,
                "results": self.results,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> WorkloadRecord:
        doc = json.loads(line)
        key = doc["key"].encode() if doc["key"] is not None else None
        return cls(key, doc["value"].encode(), doc["id"], doc["type"], int(doc["results"]))


def write_workload(path: Path, records: Iterable[WorkloadRecord]) -> int:
    """Write records as JSON lines; returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(record.to_json() + "\n")
            count += 1
    return count


def read_workload(path: Path) -> list[WorkloadRecord]:
    with path.open(encoding="utf-8") as lines:
        return [WorkloadRecord.from_json(line) for line in lines if line.strip()]


def demo_pool(count: int, seed: int = 7) -> Iterator[WorkloadRecord]:
    """``count`` valid demo events of every type (lazily; results unknown: 0)."""
    for record in demo_records(count, seed=seed, bad=False):
        assert record.event_id is not None  # valid demo events always carry their id
        yield WorkloadRecord(record.key, record.value, record.event_id, record.event_type, 0)


def stamp(record: WorkloadRecord, id_prefix: str, ts_ms: int) -> tuple[bytes, str]:
    """The record's value with event time ``ts_ms`` and id ``id_prefix + id``; and that id.

    Demo events are flat JSON objects whose ``id`` and ``ts`` come first, so the first
    occurrences are the envelope's (media fields are base64 and hold no quotes).
    """
    value = _TS_FIELD.sub(b'"ts": %d' % ts_ms, record.value, count=1)
    if id_prefix:
        value = _ID_FIELD.sub(b'"id": "' + id_prefix.encode(), value, count=1)
    return value, id_prefix + record.event_id


def cycle_stamped(records: list[WorkloadRecord], run: str) -> Iterator[tuple[WorkloadRecord, str]]:
    """Endless ``(record, id prefix)`` pairs: the workload again and again, ids unique per pass."""
    if not records:
        raise ValueError("empty workload")
    passes = 0
    while True:
        for record in records:
            yield record, f"{run}{passes}-"
        passes += 1
