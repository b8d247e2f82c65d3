"""The operator tools' pure parts: images in printed results, dead-letter filters and times,
and one replay per event."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamproc.deadletters import DeadLetterError, Letter, LetterFilter, parse_time, plan_replay, select
from streamproc.dev.feeds import compact, summarize

NOW_MS = 1_800_000_000_000


def png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(size * size, dtype=np.uint8).reshape(size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_in_results_are_saved_once_and_printed_as_format_size_and_path(tmp_path: Path) -> None:
    data = png(64)
    record = {
        "plugin": "artwork",
        "kind": "artwork",
        "key": "up1",
        "body": {"images": [base64.b64encode(data).decode()]},
    }
    line = summarize(record, tmp_path)
    [saved] = list(tmp_path.iterdir())
    assert saved.read_bytes() == data
    assert line == f'[artwork] artwork up1: {{"images": ["<png {len(data) / 1000:.1f} kB: {saved}>"]}}'
    summarize(record, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1, "the same image is saved once"
    assert compact({"text": "x" * 100}, tmp_path) == {"text": "x" * 100}
    assert compact({"text": "x" * 200}, tmp_path) == {"text": "<200 chars>"}
    assert compact({"text": "iVBORw0KGgo" + "!" * 180}, tmp_path) == {"text": "<191 chars>"}, "not base64: not an image"


def letter(offset: int, **doc: object) -> Letter:
    original = json.dumps({"id": doc.get("event_id"), "type": "upload"}).encode()
    base = {"stage": "prepare", "plugin": "tagger", "reason": "image: not a PNG", "refused_ts": NOW_MS - 60_000}
    base |= {"topic": "upload-events", "partition": 0, "offset": offset, "key": "k", "original_truncated": False}
    base["original"] = base64.b64encode(original).decode()
    return Letter(0, offset, {**base, **doc})


def test_times_are_durations_ago_or_iso_8601_in_utc() -> None:
    assert parse_time("15m", NOW_MS) == NOW_MS - 15 * 60_000
    assert parse_time("1.5h", NOW_MS) == NOW_MS - 90 * 60_000
    assert parse_time("2027-01-15T08:00:00", NOW_MS) == parse_time("2027-01-15T09:00:00+01:00", NOW_MS)
    with pytest.raises(DeadLetterError, match="use a duration ago"):
        parse_time("yesterday", NOW_MS)


def test_filters_combine_stage_plugin_reason_and_time() -> None:
    letters = [
        letter(0, event_id="a"),
        letter(1, event_id="b", stage="decode", plugin=None, reason="ts: Input should be a valid integer"),
        letter(2, event_id="c", refused_ts=NOW_MS - 3 * 3600_000),
    ]
    assert [x.offset for x in select(letters, LetterFilter(stage="decode"))] == [1]
    assert [x.offset for x in select(letters, LetterFilter(plugin="tagger", reason="NOT A PNG"))] == [0, 2]
    assert [x.offset for x in select(letters, LetterFilter(since_ms=NOW_MS - 3600_000))] == [0, 1]
    assert [x.offset for x in select(letters, LetterFilter(until_ms=NOW_MS - 3600_000))] == [2]


def test_replay_sends_each_event_once_and_skips_letters_without_their_whole_original() -> None:
    letters = [
        letter(0, event_id="a", plugin="tagger"),
        letter(1, event_id="a", plugin="translator"),  # the same event, refused by a second plugin
        letter(2, event_id="b", original=None),  # a tombstone
        letter(3, event_id="c", original_truncated=True),  # too large to keep whole
        letter(4, event_id=None),  # no readable id: one replay per source record (topic, partition, offset)
        letter(5, event_id=None),
    ]
    report = plan_replay(letters)
    assert [x.offset for x in report.sent] == [0, 4, 5]
    assert {x.offset: why.split(":")[0].split(" (")[0] for x, why in report.skipped} == {
        1: "same event as an earlier letter",
        2: "original not kept whole",
        3: "original not kept whole",
    }
