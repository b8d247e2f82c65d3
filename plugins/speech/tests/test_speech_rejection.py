"""Confidence and rejection through the public path: registry -> prepare -> infer -> result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from speech_helpers import audio_event, say_heldout, wav_bytes
from streamproc_speech.recognizer import weights_path

from streamproc.errors import ConfigError
from streamproc.plugin import Plugin
from streamproc.registry import load_plugin

RATE = 16_000
THRESHOLD = json.loads((weights_path(None) / "config.json").read_text())["min_confidence"]  # the shipped one


def run_one(plugin: Plugin, samples: np.ndarray) -> dict:
    event = audio_event(wav_bytes(samples))
    prepared = plugin.prepare(event, None)
    with torch.inference_mode():
        (output,) = plugin.infer([prepared])
    return dict(plugin.result(event, output))


def _tones() -> dict[str, np.ndarray]:
    t = np.arange(2 * RATE) / RATE
    chord = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (440.0, 554.4, 659.3))
    melody = np.concatenate(
        [0.3 * np.sin(2 * np.pi * f * t[: RATE // 4]) for f in (262, 294, 330, 349, 392, 440, 494, 523)]
    )
    return {"chord": chord, "melody": melody}


def test_silence_noise_and_tones_are_rejected_as_non_speech(plugin: Plugin) -> None:
    rng = np.random.default_rng(0)
    sounds = {"silence": np.zeros(RATE), "white noise": rng.normal(0, 0.1, 2 * RATE), **_tones()}
    for name, samples in sounds.items():
        body = run_one(plugin, samples.astype(np.float32))
        assert body["rejected"] is True and body["reason"] == "non_speech", (name, body)
        assert body["text"] == "" and body["segments"] == []


def test_a_tone_burst_between_silences_is_rejected(plugin: Plugin) -> None:
    # the energy detector takes the burst for an utterance; the confidence still refuses it
    burst = np.concatenate([np.zeros(RATE // 2), _tones()["melody"], np.zeros(RATE // 2)]).astype(np.float32)
    body = run_one(plugin, burst)
    assert body["rejected"] is True and body["text"] == "", body
    assert {s["reason"] for s in body["rejected_segments"]} <= {"out_of_grammar", "low_confidence"}


@pytest.mark.parametrize("request_text", ["open netflix", "go forward ten meters", "what is the weather like today"])
def test_out_of_grammar_requests_from_the_held_out_engine_are_rejected(plugin: Plugin, request_text: str) -> None:
    body = run_one(plugin, say_heldout(request_text))
    # short requests may sound close to a command ("low_confidence"); never non-speech, never accepted
    assert body["rejected"] is True and body["reason"] in ("out_of_grammar", "low_confidence"), body
    assert body["text"] == "" and body["segments"] == [] and body["confidence"] < THRESHOLD


def test_a_sentence_far_from_any_command_is_rejected_as_out_of_grammar(plugin: Plugin) -> None:
    body = run_one(plugin, say_heldout("the quick brown fox jumps over the lazy dog", "cmu_us_slt_arctic_hts"))
    assert body["rejected"] is True and body["reason"] == "out_of_grammar", body


def test_a_command_from_the_held_out_engine_is_accepted_with_confidences(plugin: Plugin) -> None:
    body = run_one(plugin, say_heldout("play season two episode seven", "cmu_us_slt_arctic_hts"))
    assert body["rejected"] is False and body["reason"] is None
    assert body["text"] == "play season two episode seven"
    (segment,) = body["segments"]
    assert [w["word"] for w in segment["words"]] == body["text"].split()
    assert all(0.0 <= w["confidence"] <= 1.0 for w in segment["words"])
    assert body["confidence"] == segment["confidence"] >= THRESHOLD


def test_the_threshold_option_decides_what_is_accepted() -> None:
    audio = say_heldout("turn it up")  # the grammar's closest phrase scores well below 1
    lenient, strict = load_plugin("speech", {"min_confidence": 0.0}), load_plugin("speech", {"min_confidence": 1.0})
    accepted = run_one(lenient, audio)
    assert accepted["rejected"] is False and accepted["text"] != ""
    rejected = run_one(strict, audio)
    assert rejected["rejected"] is True and rejected["reason"] in ("out_of_grammar", "low_confidence")
    assert rejected["confidence"] == accepted["confidence"] < 1.0


@pytest.mark.parametrize("value", [-0.1, 1.5, "high"])
def test_an_invalid_threshold_is_refused_at_load(value: object) -> None:
    with pytest.raises(ConfigError, match="min_confidence"):
        load_plugin("speech", {"min_confidence": value})


def test_an_unknown_option_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        load_plugin("speech", {"threshold": 0.5})
