"""The shipped weights on a small fixed subset of the held-out engine (festival, never used
in training or model selection), through the plugin's public path, against baselines.

Baselines: pocketsphinx for the word error rate, and the same plugin loaded with
``min_confidence: 0.0`` (rejection off except where the grammar decodes nothing) for the
rejection figures. Floors are set below the full held-out figures of the model card
(``python -m streamproc_speech.heldout report --per-voice 170 --update-card``: 510 commands
in five conditions, 255 out-of-grammar clips, 40 non-speech clips, with 95 % intervals),
with room for the sampling spread of 12 clips; the subset is fixed (seeded), so the
figures are the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from speech_helpers import audio_event, wav_bytes
from streamproc_speech.data import heldout_specs
from streamproc_speech.evaluate import Pocketsphinx, word_error_rate
from streamproc_speech.heldout import mix_at_snr, non_speech_clips, pad
from streamproc_speech.outside import free_speech, requests
from streamproc_speech.synth import FESTIVAL_VOICES, ClipSpec, synthesize

from streamproc.plugin import Plugin
from streamproc.registry import load_plugin
from streamproc.testing import PluginHarness

pytestmark = pytest.mark.quality

NOISE = (("white", 20.0), ("pink", 20.0), ("white", 10.0), ("pink", 10.0))


@dataclass(frozen=True)
class Subset:
    """12 commands (4 per festival voice, unpadded), 12 utterances outside the grammar
    (8 requests, 4 sentences of the test half), 8 non-speech sounds."""

    commands: list[tuple[str, np.ndarray]]
    outside: list[np.ndarray]
    non_speech: list[np.ndarray]


@pytest.fixture(scope="module")
def subset() -> Subset:
    commands = [(s.text, synthesize(s)) for s in heldout_specs(4)]
    texts = requests("test")[:8] + free_speech("test")[:4]
    outside = [pad(synthesize(ClipSpec(t, "festival", FESTIVAL_VOICES[i % 3]))) for i, t in enumerate(texts)]
    return Subset(commands, outside, [c.samples for c in non_speech_clips(8, seed=1)])


@pytest.fixture(scope="module")
def no_rejection() -> Plugin:
    """The baseline: the same weights with the threshold at 0.0."""
    return load_plugin("speech", {"min_confidence": 0.0})


def verdicts(plugin: Plugin, clips: list[np.ndarray]) -> list[tuple[str, bool]]:
    """(text, rejected) of each clip's result, through prepare -> batched infer -> result."""
    events = [audio_event(wav_bytes(c), f"e{i}") for i, c in enumerate(clips)]
    return [(b["text"], b["rejected"]) for b in PluginHarness.around(plugin).results(events) if b is not None]


def command_accuracy(plugin: Plugin, clips: list[np.ndarray], texts: list[str]) -> float:
    """Share of clips accepted with exactly the command said."""
    found = verdicts(plugin, clips)
    return sum(v == (t, False) for v, t in zip(found, texts, strict=True)) / len(texts)


def accepted_share(plugin: Plugin, clips: list[np.ndarray]) -> float:
    return sum(not rejected for _, rejected in verdicts(plugin, clips)) / len(clips)


def test_the_model_beats_pocketsphinx_on_the_held_out_engine(no_rejection: Plugin, subset: Subset) -> None:
    """Word error rate on the clean commands, rejection off (the card: model 2.9 %, 1,554
    words): below 10 %, below pocketsphinx with its language model, and no worse than
    pocketsphinx with the same grammar."""
    pytest.importorskip("pocketsphinx", reason="the eval extra (pip install streamproc-speech[eval])")
    texts, clips = [t for t, _ in subset.commands], [pad(s) for _, s in subset.commands]
    model = word_error_rate(texts, [text for text, _ in verdicts(no_rejection, clips)])
    decoders = {mode: Pocketsphinx(mode) for mode in ("lm", "grammar")}
    sphinx = {mode: word_error_rate(texts, [d.transcribe(c) for c in clips]) for mode, d in decoders.items()}
    assert model <= 0.1, (model, sphinx)
    assert model < sphinx["lm"] and model <= sphinx["grammar"], (model, sphinx)


def test_rejection_cuts_false_accepts_on_out_of_grammar_speech(
    plugin: Plugin, no_rejection: Plugin, subset: Subset
) -> None:
    """Full evaluation: see the card's request and free_speech false-accept rates."""
    baseline, at_threshold = accepted_share(no_rejection, subset.outside), accepted_share(plugin, subset.outside)
    assert at_threshold <= 0.25, (at_threshold, baseline)
    assert at_threshold <= baseline - 0.5, (at_threshold, baseline)


@pytest.mark.parametrize(
    ("condition", "floor"),
    [("clean", 0.75), ("white 20 dB", 0.6), ("pink 20 dB", 0.6), ("white 10 dB", 0.33), ("pink 10 dB", 0.5)],
)
def test_commands_keep_their_accuracy_at_the_threshold_clean_and_in_noise(
    plugin: Plugin, no_rejection: Plugin, subset: Subset, condition: str, floor: float
) -> None:
    """Accepted and exactly right, over all commands: at most 10 points below the baseline
    without rejection, and above ``floor``. Noise is mixed at a measured SNR."""
    texts = [t for t, _ in subset.commands]
    if condition == "clean":
        clips = [pad(samples) for _, samples in subset.commands]
    else:
        colour, snr = next((c, s) for c, s in NOISE if condition == f"{c} {s:.0f} dB")
        rng = np.random.default_rng(0)
        mixed = [mix_at_snr(samples, colour, snr, rng) for _, samples in subset.commands]
        assert all(abs(measured - snr) < 0.5 for _, measured in mixed), [m for _, m in mixed]
        clips = [clip for clip, _ in mixed]
    baseline, at_threshold = command_accuracy(no_rejection, clips, texts), command_accuracy(plugin, clips, texts)
    assert at_threshold >= floor, (at_threshold, baseline)
    assert at_threshold >= baseline - 0.1, (at_threshold, baseline)


def test_non_speech_sounds_are_rejected(plugin: Plugin, subset: Subset) -> None:
    """Chords, melodies, noise bursts and clicks between silences: none emits a command."""
    found = verdicts(plugin, subset.non_speech)
    assert all(rejected and text == "" for text, rejected in found), found
