"""The translator plugin through the engine's harness: real events in, translation bodies out."""

from __future__ import annotations

import re

import pytest
from conftest import needs_apertium, transcript, upload

from streamproc.errors import ConfigError
from streamproc.events import Event, PlaybackEvent
from streamproc.testing import PluginHarness, check_contract


def test_english_upload_gets_spanish_title_and_description(gru: PluginHarness) -> None:
    (body,) = gru.results([upload("The king and his son", "The people went to the house of God.")])
    assert body is not None
    assert body["source_language"] == "en"
    assert body["target_language"] == "es"
    assert set(body["fields"]) == {"title", "description"}
    assert "rey" in body["fields"]["title"]
    assert "Dios" in body["fields"]["description"]
    assert body["truncated"] is False
    assert body["backend"] == "gru"
    assert body["model_version"] == gru.plugin.model_version
    assert gru.plugin.model_version.startswith("translator-")


def test_transcript_gets_a_translation(gru: PluginHarness) -> None:
    (body,) = gru.results([transcript("play the next video")])
    assert body is not None
    assert set(body["fields"]) == {"text"}
    assert body["fields"]["text"]
    assert body["fields"]["text"] != "play the next video"


def test_characters_never_seen_in_training_are_copied_not_dropped(gru: PluginHarness) -> None:
    (body,) = gru.results([upload("I love this song \u2603")])
    assert body is not None
    assert "\u2603" in body["fields"]["title"]


def test_spanish_upload_labelled_english_is_passed_through_not_translated(gru: PluginHarness) -> None:
    text = "Cómo cocinar paella en casa con mi abuela"
    (body,) = gru.results([upload(text, "Please like and subscribe")])
    assert body is not None
    assert body["fields"]["title"] == text
    assert body["languages"]["title"]["language"] == "es"
    assert body["languages"]["title"]["translated"] is False
    assert 0.5 < body["languages"]["title"]["confidence"] <= 1.0
    assert body["languages"]["description"]["language"] == "en"
    assert body["languages"]["description"]["translated"] is True
    assert body["fields"]["description"] != "Please like and subscribe"
    assert "title" not in body["segments"]
    assert "description" in body["segments"]


def test_chinese_text_and_a_bare_url_are_never_translated(gru: PluginHarness) -> None:
    url = "https://example.com/watch?v=abc123"
    (body,) = gru.results([upload("如何在家做西班牙海鲜饭", url)])
    assert body is not None
    assert body["fields"] == {"title": "如何在家做西班牙海鲜饭", "description": url}
    assert body["languages"]["title"]["language"] == "zh"
    assert body["languages"]["description"]["language"] == "und"
    assert not any(v["translated"] for v in body["languages"].values())
    assert body["segments"] == {}


def test_english_text_labelled_spanish_is_still_translated(gru: PluginHarness) -> None:
    (body,) = gru.results([upload("The best movies of the year", language="es")])
    assert body is not None
    assert body["languages"]["title"]["language"] == "en"
    assert body["languages"]["title"]["translated"] is True
    assert body["fields"]["title"] != "The best movies of the year"


def test_refuse_policy_refuses_non_english_with_the_detected_language() -> None:
    harness = PluginHarness.load("translator", {"backend": "gru", "non_english": "refuse"})
    outcome, english = harness.run([upload("Das ist ein sehr gutes Video über Katzen"), upload("Sunset over the lake")])
    assert outcome.failure is not None
    assert outcome.failure.stage == "prepare"
    assert re.search(r"title: detected language 'de' \(confidence [01]\.\d+, hint 'en'\)", outcome.failure.reason)
    assert english.body is not None


def test_targets_without_spanish_need_nothing() -> None:
    harness = PluginHarness.load("translator", {"backend": "gru", "targets": ["fr", "de"]})
    assert harness.results([upload("The king")]) == [None]


def test_regional_language_codes_and_a_single_target_are_accepted() -> None:
    harness = PluginHarness.load("translator", {"backend": "gru", "targets": "es-MX"})
    (body,) = harness.results([upload("The king", language="en-GB")])
    assert body is not None
    assert body["target_language"] == "es"


def test_empty_fields_are_left_out_and_all_empty_needs_nothing(gru: PluginHarness) -> None:
    body, nothing, no_text = gru.results([upload("", "Peace be with you."), upload("   ", "\n"), transcript("")])
    assert body is not None
    assert set(body["fields"]) == {"description"}
    assert nothing is None
    assert no_text is None


def test_more_sentences_than_max_segments_sets_truncated(gru: PluginHarness) -> None:
    sentence = "The king went to the city. "
    many, fits = gru.results([upload("The king", sentence * 20), upload("The king", sentence * 16)])
    assert many is not None and fits is not None
    assert many["truncated"] is True
    assert fits["truncated"] is False
    assert len(many["segments"]["description"]) == 16
    assert many["fields"]["description"] == fits["fields"]["description"]


def test_output_that_hits_the_length_cap_sets_truncated() -> None:
    harness = PluginHarness.load("translator", {"backend": "gru"})
    harness.plugin.gru.max_target_tokens = 3  # type: ignore[attr-defined]
    (body,) = harness.results([upload("The people went to the house of God with their sons and daughters")])
    assert body is not None
    assert body["truncated"] is True
    assert body["segments"]["title"][0]["truncated"] is True


def test_source_over_the_subword_limit_sets_truncated() -> None:
    harness = PluginHarness.load("translator", {"backend": "gru"})
    harness.plugin.gru.max_source_tokens = 4  # type: ignore[attr-defined]
    short, long = harness.results([upload("Hello"), upload("The people went to the house of God")])
    assert short is not None and long is not None
    assert short["truncated"] is False
    assert long["truncated"] is True


def test_repetitive_input_does_not_make_the_decoder_loop(gru: PluginHarness) -> None:
    texts = [
        "The king and his son",
        "play episode seven",
        "volume up",
        "Please like and subscribe, please like and subscribe, please like and subscribe",
        "Sunset over the lake " * 6,
    ]
    bodies = gru.results([upload(t, n=i) for i, t in enumerate(texts)])
    for text, body in zip(texts, bodies, strict=True):
        assert body is not None
        assert body["truncated"] is False, (text, body["fields"])
        words = body["fields"]["title"].lower().split()
        trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
        source_words = text.lower().split()
        source_trigrams = [tuple(source_words[i : i + 3]) for i in range(len(source_words) - 2)]
        if len(set(source_trigrams)) == len(source_trigrams):
            assert len(set(trigrams)) == len(trigrams), (text, body["fields"]["title"])


def test_long_sentence_is_split_into_aligned_segments_without_dropping_words(gru: PluginHarness) -> None:
    text = (
        "This video shows how we cooked a large paella at home with our friends and family, "
        "and then we went down to the lake to watch the sunset while the children played "
        "with the dogs near the water until it was dark."
    )
    (body,) = gru.results([upload(text)])
    assert body is not None
    rows = body["segments"]["title"]
    output = body["fields"]["title"]
    assert len(rows) >= 2
    assert all(len(text[start:end].split()) <= 30 for start, end in (r["source"] for r in rows))
    covered = " ".join(text[start:end] for start, end in (r["source"] for r in rows))
    assert covered.split() == text.split()
    assert " ".join(output[start:end] for start, end in (r["target"] for r in rows)) == output
    assert body["truncated"] is False


def test_batch_gives_the_same_results_as_one_by_one(gru: PluginHarness) -> None:
    events: list[Event] = [
        upload("The light of the world", "Love your neighbour as yourself.", n=1),
        transcript("volume up"),
        upload("My son", "The king of Israel went up to Jerusalem. He had many horses.", n=2),
        transcript("play episode seven"),
        upload("", "And God saw the light, that it was good.", n=3),
    ]
    assert gru.results(events) == [gru.results([e])[0] for e in events]


def test_transcript_without_text_or_language_is_refused_naming_the_field(gru: PluginHarness) -> None:
    no_text, bad_language = gru.run([transcript(None), transcript("hello", language=7)])
    assert no_text.failure is not None and "body.text" in no_text.failure.reason
    assert bad_language.failure is not None and "body.language" in bad_language.failure.reason


def test_other_event_types_are_refused(gru: PluginHarness) -> None:
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
    (outcome,) = gru.run([playback])
    assert outcome.failure is not None
    assert outcome.failure.reason.startswith("type:")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"targets": [1, 2]}, "targets"),
        ({"max_segments": 0}, "max_segments"),
        ({"backend": "marian"}, "backend"),
        ({"non_english": "translate anyway"}, "non_english"),
        ({"beam": 4}, "beam"),
    ],
)
def test_malformed_options_are_refused_at_load_naming_the_option(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"plugins\.translator\.options\.{field}"):
        PluginHarness.load("translator", options)


def test_missing_apertium_binary_is_a_config_error_at_load() -> None:
    with pytest.raises(ConfigError, match="apertium-eng-spa"):
        PluginHarness.load("translator", {"backend": "apertium", "apertium_executable": "no-such-apertium"})


@needs_apertium
def test_default_backend_is_apertium_and_translates_through_the_same_path() -> None:
    harness = PluginHarness.load("translator")
    events: list[Event] = [
        upload("Sunset over the lake", "Please like and subscribe. Cómo cocinar paella en casa"),
        transcript("volume up"),
    ]
    bodies = harness.results(events)
    assert harness.plugin.model_version == "apertium-eng-spa"
    assert bodies[0] is not None
    assert bodies[0]["backend"] == "apertium"
    assert bodies[0]["fields"]["title"] == "Ocaso sobre el lago"
    assert bodies[0]["segments"]["title"] == [{"source": [0, 20], "target": [0, 19], "truncated": False}]
    assert bodies == [harness.results([e])[0] for e in events]


CONTRACT_EVENTS: list[Event] = [
    upload("Sunset over the lake", "How to cook paella at home. Please like and subscribe!", n=1),
    upload("如何在家做西班牙海鲜饭", "https://example.com/watch?v=abc123", n=2),
    upload("Cómo cocinar paella en casa", "A recipe from my grandmother.", language="es", n=3),
    transcript("play the next video"),
    upload("", "", n=4),
    transcript(None),
]


def test_translator_meets_the_plugin_contract() -> None:
    report = check_contract(lambda: PluginHarness.load("translator", {"backend": "gru"}), CONTRACT_EVENTS)
    assert report.results == 4
    assert report.skipped == 1
    assert report.failed == 1
    assert report.violations == []


@needs_apertium
def test_translator_meets_the_plugin_contract_with_the_apertium_backend() -> None:
    report = check_contract(lambda: PluginHarness.load("translator", {"backend": "apertium"}), CONTRACT_EVENTS)
    assert report.results == 4
    assert report.violations == []


def test_options_model_documents_every_field_and_fills_defaults() -> None:
    harness = PluginHarness.load("translator", {"backend": "gru"})
    options_model = type(harness.plugin).Options
    assert options_model is not None
    assert all(field.description for field in options_model.model_fields.values())
    defaults = options_model.model_validate({}).model_dump()
    assert defaults["backend"] == "apertium"
    assert defaults["targets"] == ["es"]
    assert defaults["non_english"] == "pass"
