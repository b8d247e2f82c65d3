"""The translator plugin through the Plugin API: real events in, translation bodies out."""

from __future__ import annotations

import shutil
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
    assert body["backend"] == "gru"
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


def test_spanish_upload_labelled_english_is_passed_through_not_translated(translator: Plugin) -> None:
    text = "Cómo cocinar paella en casa con mi abuela"
    (body,) = run(translator, [upload(text, "Please like and subscribe")])
    assert body["fields"]["title"] == text
    assert body["languages"]["title"]["language"] == "es"
    assert body["languages"]["title"]["translated"] is False
    assert body["languages"]["description"] == {
        "language": "en",
        "confidence": body["languages"]["description"]["confidence"],
        "translated": True,
    }
    assert body["fields"]["description"] != "Please like and subscribe"
    assert "title" not in body["segments"]


def test_chinese_text_and_a_bare_url_are_never_translated(translator: Plugin) -> None:
    url = "https://example.com/watch?v=abc123"
    (body,) = run(translator, [upload("如何在家做西班牙海鲜饭", url)])
    assert body["fields"] == {"title": "如何在家做西班牙海鲜饭", "description": url}
    assert body["languages"]["title"]["language"] == "zh"
    assert body["languages"]["description"]["language"] == "und"
    assert not any(v["translated"] for v in body["languages"].values())


def test_english_text_labelled_spanish_is_still_translated(translator: Plugin) -> None:
    (body,) = run(translator, [upload("The best movies of the year", language="es")])
    assert body["languages"]["title"]["language"] == "en"
    assert body["languages"]["title"]["translated"] is True


def test_refuse_policy_refuses_non_english_with_the_detected_language() -> None:
    plugin = load_plugin("translator", {"backend": "gru", "non_english": "refuse"})
    with pytest.raises(InvalidInput, match=r"title: detected language 'de'"):
        plugin.prepare(upload("Das ist ein sehr gutes Video über Katzen"), None)


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


def test_more_sentences_than_max_segments_sets_truncated(translator: Plugin) -> None:
    sentence = "The king went to the city. "
    (many,) = run(translator, [upload("The king", sentence * 20)])
    (fits,) = run(translator, [upload("The king", sentence * 16)])
    assert many["truncated"] is True
    assert fits["truncated"] is False
    assert many["fields"]["description"] == fits["fields"]["description"]


def test_output_that_hits_the_length_cap_sets_truncated() -> None:
    plugin = load_plugin("translator", {"backend": "gru"})
    plugin.gru.max_target_tokens = 3
    (body,) = run(plugin, [upload("The people went to the house of God with their sons and daughters")])
    assert body["truncated"] is True
    assert body["segments"]["title"][0]["truncated"] is True


def test_long_sentence_is_split_into_aligned_segments_without_dropping_words(translator: Plugin) -> None:
    text = (
        "This video shows how we cooked a large paella at home with our friends and family, "
        "and then we went down to the lake to watch the sunset while the children played "
        "with the dogs near the water until it was dark."
    )
    (body,) = run(translator, [upload(text)])
    rows = body["segments"]["title"]
    output = body["fields"]["title"]
    assert len(rows) >= 2
    covered = " ".join(text[start:end] for start, end in (r["source"] for r in rows))
    assert covered.split() == text.split()
    assert " ".join(output[start:end] for start, end in (r["target"] for r in rows)) == output
    assert body["truncated"] is False


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
    with pytest.raises(ConfigError, match="backend"):
        load_plugin("translator", {"backend": "marian"})
    with pytest.raises(ConfigError, match="non_english"):
        load_plugin("translator", {"non_english": "translate anyway"})


def test_missing_apertium_binary_is_a_config_error_at_load() -> None:
    with pytest.raises(ConfigError, match="apertium-eng-spa"):
        load_plugin("translator", {"backend": "apertium", "apertium_executable": "no-such-apertium"})


@pytest.mark.skipif(shutil.which("apertium") is None, reason="needs apertium and apertium-eng-spa")
def test_default_backend_is_apertium_and_translates_through_the_same_path() -> None:
    plugin = load_plugin("translator")
    events: list[Event] = [upload("Sunset over the lake", "Please like and subscribe."), transcript("volume up")]
    bodies = run(plugin, events)
    assert bodies[0]["backend"] == "apertium"
    assert bodies[0]["fields"]["title"] == "Ocaso sobre el lago"
    assert plugin.model_version == "apertium-eng-spa"
    assert bodies == [run(plugin, [e])[0] for e in events]
