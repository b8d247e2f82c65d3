"""Wire records: dead-letter stages are one list, documented in the README from the code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from streamproc.records import DEAD_LETTER_STAGES, DeadLetter, DeadLetterStage, SourceRecord

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_dead_letter_stage_has_a_meaning_listed_in_the_readme() -> None:
    assert set(DEAD_LETTER_STAGES) == set(get_args(DeadLetterStage))
    readme = README.read_text()
    missing = [stage for stage, meaning in DEAD_LETTER_STAGES.items() if f"| `{stage}` | {meaning} |" not in readme]
    assert not missing, f"README lacks the dead-letter stages {missing}"


def test_a_dead_letter_carries_the_time_it_was_refused_and_the_original_bytes() -> None:
    letter = DeadLetter(SourceRecord("t", 0, 5, b"k", b"\xff raw"), "engine", "boom")
    doc = json.loads(letter.to_json())
    assert doc["refused_ts"] > 1_700_000_000_000
    assert (doc["stage"], doc["offset"], doc["key"], doc["original"]) == ("engine", 5, "k", "/yByYXc=")
