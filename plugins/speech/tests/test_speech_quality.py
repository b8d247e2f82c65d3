"""The shipped weights, evaluated fresh on held-out voices, against pocketsphinx."""

from __future__ import annotations

import pytest
from streamproc_speech.evaluate import evaluate

pytestmark = pytest.mark.quality


def test_shipped_model_beats_pocketsphinx_on_unseen_voices() -> None:
    pytest.importorskip("pocketsphinx", reason="the eval extra (pip install streamproc-speech[eval])")
    results = evaluate(flite_per_voice=30, espeak_per_variant=5, conditions=("clean",))
    assert results["clips"] == 80
    clean = results["clean"]
    model = clean["model_lexicon"]["all"]
    assert model <= 0.15, clean
    assert model < clean["pocketsphinx_lm"]["all"], clean
    assert model < clean["pocketsphinx_grammar"]["all"], clean
