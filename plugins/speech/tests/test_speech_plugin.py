"""The speech plugin end to end: prepare -> infer -> result on real WAV events."""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from speech_helpers import audio_event, say, wav_bytes
from streamproc_speech.evaluate import word_error_rate
from streamproc_speech.plugin import SpeechRecognizer

from streamproc.errors import ConfigError, InvalidInput, MediaError
from streamproc.events import PlaybackEvent
from streamproc.media import resample
from streamproc.plugin import ENTRY_POINT_GROUP, LoadContext, Plugin
from streamproc.testing import PluginHarness, check_contract


def run(plugin: Plugin, events: list) -> list[dict]:
    """Result bodies through the worker's path (prepare, batched infer, result)."""
    return PluginHarness.around(plugin).results(events)  # type: ignore[return-value]


def test_entry_point_names_the_speech_plugin_class() -> None:
    found = {e.name: e for e in entry_points(group=ENTRY_POINT_GROUP)}
    assert found["speech"].load() is SpeechRecognizer
    assert SpeechRecognizer.consumes == ("audio",) and SpeechRecognizer.produces == "transcript"


def test_load_sets_a_weights_hash_version(plugin: Plugin) -> None:
    assert plugin.model_version.startswith("speech-ctc-") and len(plugin.model_version) == len("speech-ctc-") + 12


def test_volume_up_from_an_unseen_voice_is_transcribed(plugin: Plugin) -> None:
    (body,) = run(plugin, [audio_event(wav_bytes(say("volume up", "rms")))])
    assert "volume up" in body["text"]


def test_result_body_carries_text_language_segments_and_version(plugin: Plugin) -> None:
    (body,) = run(plugin, [audio_event(wav_bytes(say("play episode seven", "awb")), language="en-GB")])
    assert body["language"] == "en-GB"
    assert body["text"] == " ".join(body["text"].split()) and body["text"] == body["text"].lower()
    assert body["model_version"] == plugin.model_version
    (segment,) = body["segments"]
    assert set(segment) == {"start_s", "end_s", "text", "confidence", "words"} and segment["text"] == body["text"]
    assert body["rejected"] is False and body["reason"] is None and body["rejected_segments"] == []
    assert 0 <= segment["start_s"] < segment["end_s"] <= body["duration_s"]


def test_stereo_44_1_khz_24_bit_input_is_transcribed(plugin: Plugin) -> None:
    mono = resample(say("skip ten seconds", "awb"), 16_000, 44_100)
    stereo = np.stack([mono, 0.8 * mono], axis=1)
    (body,) = run(plugin, [audio_event(wav_bytes(stereo, rate=44_100, channels=2, bits=24))])
    assert body["text"] == "skip ten seconds"


def test_silent_audio_is_rejected_as_non_speech(plugin: Plugin) -> None:
    silent, quiet_hiss = np.zeros(32_000), np.random.default_rng(0).normal(0, 1e-4, 32_000)
    for samples in (silent, quiet_hiss, np.zeros(0)):
        (body,) = run(plugin, [audio_event(wav_bytes(samples))])
        assert body["text"] == "" and body["segments"] == []
        assert body["rejected"] is True and body["reason"] == "non_speech" and body["confidence"] == 0.0


def test_random_bytes_are_refused_as_a_media_error(plugin: Plugin) -> None:
    garbage = os.urandom(4000)
    for audio in (garbage, b"RIFF\x10\x00\x00\x00WAVE" + garbage[:20]):
        with pytest.raises(MediaError, match="audio"):
            plugin.prepare(audio_event(audio), None)


def test_twenty_second_clip_with_three_commands_gives_three_segments(plugin: Plugin) -> None:
    commands = [("pause", 1.5, "rms"), ("go back thirty seconds", 8.0, "awb"), ("next episode", 15.0, "rms")]
    audio = np.random.default_rng(1).normal(0, 3e-4, 20 * 16_000).astype(np.float32)
    for text, start, voice in commands:
        speech = say(text, voice)
        audio[int(start * 16_000) : int(start * 16_000) + len(speech)] += speech
    (body,) = run(plugin, [audio_event(wav_bytes(audio))])
    assert len(body["segments"]) == 3
    for segment, (text, start, _) in zip(body["segments"], commands, strict=True):
        assert abs(segment["start_s"] - start) < 0.5
        assert len(segment["text"].split()) == len(text.split())
    # at most one word wrong: the model hears awb's "thirty" as "thirteen" (README, known errors)
    assert word_error_rate([" ".join(c[0] for c in commands)], [body["text"]]) <= 1 / 6


def test_a_batch_gives_the_same_results_as_one_by_one(plugin: Plugin) -> None:
    two_commands = np.concatenate([say("mute", "awb"), np.zeros(16_000), say("play track twelve", "rms")])
    events = [
        audio_event(wav_bytes(say("volume down", "awb")), "b1"),
        audio_event(wav_bytes(np.zeros(8000)), "b2"),
        audio_event(wav_bytes(two_commands), "b3"),
        audio_event(wav_bytes(say("forty two", "rms")), "b4"),
    ]
    assert run(plugin, events) == [run(plugin, [e])[0] for e in events]


def test_events_it_cannot_serve_are_refused_with_a_reason(plugin: Plugin) -> None:
    playback = PlaybackEvent(
        id="p", type="playback", ts=0, user_id="u", item_id="i", action="start", position_s=0.0, duration_s=1.0,
        media="music",
    )  # fmt: skip
    cases = [
        (playback, "type"),
        (audio_event(wav_bytes(np.zeros(100)), language="es"), "language"),
        (audio_event(None, audio_uri="s3://bucket/clip.wav"), "audio"),
    ]
    for event, field in cases:
        with pytest.raises(InvalidInput, match=field):
            plugin.prepare(event, None)


def test_options_choose_the_weights_folder_and_decoder() -> None:
    from streamproc_speech.recognizer import weights_path

    lexicon = SpeechRecognizer()
    lexicon.load(
        LoadContext(torch.device("cpu"), options={"weights_dir": str(weights_path(None)), "decoder": "lexicon"})
    )
    (body,) = run(lexicon, [audio_event(wav_bytes(say("stop", "awb")))])
    assert body["text"] == "stop"
    with pytest.raises(ConfigError, match=r"^plugins\.speech\.options\.decoder: "):
        PluginHarness.load("speech", {"decoder": "oracle"})


def test_speech_meets_the_plugin_contract() -> None:
    events = [
        audio_event(wav_bytes(say("volume down", "awb")), "c1"),
        audio_event(wav_bytes(np.zeros(8000)), "c2"),
        audio_event(wav_bytes(say("play track twelve", "rms")), "c3"),
    ]
    report = check_contract(lambda: PluginHarness.load("speech"), events)
    assert report.results == 3
