"""The translator plugin through the Plugin API: real events in, translation bodies out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import AudioEvent, DerivedEvent, Event, PlaybackEvent, UploadEvent
from streamproc.plugin import Plugin
from streamproc.registry import load_plugin


def upload(title: str = "", description: str = "", language: str = "en", n: int = 1) -> UploadEvent:
    return UploadEvent(
        id=f"e{n}",
        type="upload",
        ts=1_700_000_000_000,
        user_id="u1",
        upload_id=f"up{n}",
        title=title,
        description=description,
        language=language,
    )


def transcript(text: Any, language: Any = "en") -> DerivedEvent:
    origin = AudioEvent(id="a1", type="audio", ts=0, user_id="u1", audio_id="clip1")
    return DerivedEvent(type="transcript", plugin="speech", body={"text": text, "language": language}, origin=origin)


def run(plugin: Plugin, events: Sequence[Event]) -> list[dict[str, Any]]:
    """prepare -> one batched infer -> result, as the engine does."""
    prepared = [plugin.prepare(e, None) for e in events]
    with torch.inference_mode():
        outputs = plugin.infer(prepared)
    return [dict(plugin.result(e, o)) for e, o in zip(events, outputs, strict=True)]


def test_english_upload_gets_spanish_title_and_description(translator: Plugin) -> None:
    event = upload("The king and his son", "The people went to the house of God.")
    (body,) = run(translator, [event])
    assert body["source_language"] == "en"
    assert body["target_language"] == "es"
    assert set(body["fields"]) == {"title", "description"}
    assert "rey" in body["fields"]["title"]
    assert "Dios" in body["fields"]["description"]
    assert body["truncated"] is False
    assert body["model_version"] == translator.model_version
    assert translator.model_version.startswith("translator-")


def test_transcript_gets_a_translation(translator: Plugin) -> None:
    (body,) = run(translator, [transcript("play the next video")])
    assert set(body["fields"]) == {"text"}
    assert body["fields"]["text"]
    assert body["fields"]["text"] != "play the next video"


def test_characters_never_seen_in_training_are_copied_not_dropped(translator: Plugin) -> None:
    (body,) = run(translator, [upload("I love this song \u2603")])
    assert "\u2603" in body["fields"]["title"]


def test_spanish_upload_with_target_es_needs_nothing(translator: Plugin) -> None:
    assert translator.prepare(upload("El rey", "La casa de Dios", language="es"), None) is None


def test_targets_without_spanish_need_nothing() -> None:
    plugin = load_plugin("translator", {"targets": ["fr", "de"]})
    assert plugin.prepare(upload("The king"), None) is None


def test_regional_language_codes_are_accepted() -> None:
    plugin = load_plugin("translator", {"targets": ["es-MX"]})
    assert plugin.prepare(upload("The king", language="en-GB"), None) is not None


def test_empty_fields_are_left_out_and_all_empty_needs_nothing(translator: Plugin) -> None:
    (body,) = run(translator, [upload("", "Peace be with you.")])
    assert set(body["fields"]) == {"description"}
    assert translator.prepare(upload("   ", "\n"), None) is None
    assert translator.prepare(transcript(""), None) is None


def test_very_long_input_is_truncated_to_the_limits(translator: Plugin) -> None:
    words = "the king went to the city"
    sentence = "The king went to the city. "
    many = sentence * (5000 // len(sentence))  # 185 sentences, of which the first 16 are kept
    # Sentences of 108 and 114 words (far over 64 subwords) are cut to the same prefix.
    (long,) = run(translator, [upload(" ".join([words] * 18), many)])
    (longer,) = run(translator, [upload(" ".join([words] * 19), sentence * 16)])
    (fits,) = run(translator, [upload(words, sentence * 16)])
    assert long["truncated"] is True
    assert long["fields"] == longer["fields"]
    assert fits["truncated"] is False
    assert fits["fields"]["description"] == long["fields"]["description"]


def test_batch_gives_the_same_results_as_one_by_one(translator: Plugin) -> None:
    events: list[Event] = [
        upload("The light of the world", "Love your neighbour as yourself.", n=1),
        transcript("volume up"),
        upload("My son", "The king of Israel went up to Jerusalem. He had many horses.", n=2),
        transcript("play episode seven"),
        upload("", "And God saw the light, that it was good.", n=3),
    ]
    batched = run(translator, events)
    single = [run(translator, [e])[0] for e in events]
    assert batched == single


def test_transcript_without_text_is_refused_naming_the_field(translator: Plugin) -> None:
    with pytest.raises(InvalidInput, match=r"body\.text"):
        translator.prepare(transcript(None), None)
    with pytest.raises(InvalidInput, match=r"body\.language"):
        translator.prepare(transcript("hello", language=7), None)


def test_other_event_types_are_refused(translator: Plugin) -> None:
    playback = PlaybackEvent(
        id="p1",
        type="playback",
        ts=0,
        user_id="u1",
        item_id="i1",
        action="start",
        position_s=0.0,
        duration_s=10.0,
        media="video",
    )
    with pytest.raises(InvalidInput, match="type"):
        translator.prepare(playback, None)


def test_malformed_options_are_refused_at_load() -> None:
    with pytest.raises(ConfigError, match="targets"):
        load_plugin("translator", {"targets": [1, 2]})
    with pytest.raises(ConfigError, match="max_segments"):
        load_plugin("translator", {"max_segments": 0})
