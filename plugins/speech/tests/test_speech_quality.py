"""The shipped weights, evaluated fresh on the held-out engine (festival), against baselines."""

from __future__ import annotations

import pytest
from streamproc_speech.data import heldout_specs
from streamproc_speech.evaluate import evaluate
from streamproc_speech.heldout import EvalClip, decode_all, pad
from streamproc_speech.outside import free_speech, requests
from streamproc_speech.recognizer import Transcriber
from streamproc_speech.synth import FESTIVAL_VOICES, ClipSpec, synthesize

pytestmark = pytest.mark.quality


def test_shipped_model_beats_pocketsphinx_on_the_held_out_engine() -> None:
    pytest.importorskip("pocketsphinx", reason="the eval extra (pip install streamproc-speech[eval])")
    results = evaluate(per_voice=8, conditions=("clean",))
    assert results["clips"] == 24
    clean = results["clean"]
    model = clean["model_grammar"]["all"]
    assert model <= 0.15, clean
    assert model < clean["pocketsphinx_lm"]["all"], clean


def test_rejection_cuts_false_accepts_and_keeps_commands_on_a_fixed_held_out_subset() -> None:
    """12 commands (4 per festival voice) and 12 utterances outside the grammar (8 requests,
    4 sentences of the test half), against the baseline without rejection (everything the
    grammar decoder finds is emitted). Margins: false accepts at least 50 points lower,
    command accuracy at most 10 points lower."""
    import torch

    commands = [EvalClip("command", s.text, s.voice, "clean", None, pad(synthesize(s))) for s in heldout_specs(4)]
    outside = [(t, FESTIVAL_VOICES[i % 3]) for i, t in enumerate(requests("test")[:8] + free_speech("test")[:4])]
    others = [
        EvalClip("request", "", v, "clean", None, pad(synthesize(ClipSpec(t, "festival", v)))) for t, v in outside
    ]
    decoded = decode_all(commands + others, None, lambda message: None)
    threshold = Transcriber(None, torch.device("cpu"), "grammar").min_confidence
    on_commands, on_others = decoded[: len(commands)], decoded[len(commands) :]
    baseline_accuracy = sum(d.baseline() == c.text for d, c in zip(on_commands, commands, strict=True)) / 12
    accuracy = sum(d.output(threshold) == (c.text, False) for d, c in zip(on_commands, commands, strict=True)) / 12
    baseline_false_accepts = sum(bool(d.baseline()) for d in on_others) / 12
    false_accepts = sum(not d.output(threshold)[1] for d in on_others) / 12
    assert false_accepts <= baseline_false_accepts - 0.5, (false_accepts, baseline_false_accepts)
    assert accuracy >= baseline_accuracy - 0.1, (accuracy, baseline_accuracy)
