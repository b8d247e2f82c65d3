"""Quality of the shipped GRU weights on a subset of the general held-out set, through the plugin path.

The full side-by-side figures come from ``python -m streamproc_translator.evaluate``
(README); this test re-measures a fixed subset (the first 120 short and 60 long pairs)
and asserts the margins with the subset's own 95 % bootstrap intervals.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from streamproc_translator import corpus
from streamproc_translator.baselines import FREEDICT_DATA, FreeDictBaseline
from streamproc_translator.evaluate import scored, through_plugin

from streamproc.registry import load_plugin

MIN_FRACTION_OF_APERTIUM = 0.85
"""Below the full set's measured GRU/Apertium chrF ratio (README), so the subset's noise alone does not fail it."""


@pytest.mark.quality
@pytest.mark.skipif(not FREEDICT_DATA.exists(), reason="needs dict-freedict-eng-spa")
@pytest.mark.skipif(shutil.which("apertium") is None, reason="needs apertium and apertium-eng-spa")
def test_gru_beats_freedict_widely_and_reaches_its_fraction_of_apertium_on_general_texts() -> None:
    torch.set_num_threads(1)
    pairs = corpus.shipped_general()
    subset = [p for p in pairs if p.kind == "short"][:120] + [p for p in pairs if p.kind == "long"][:60]
    english = [p.en for p in subset]
    dictionary = FreeDictBaseline()
    systems = {
        "gru": through_plugin(load_plugin("translator", {"backend": "gru"}), english),
        "apertium": through_plugin(load_plugin("translator", {"backend": "apertium"}), english),
        "freedict": [dictionary.translate(t) for t in english],
    }
    table = scored(systems, [p.es for p in subset])
    assert table["gru_minus_freedict_chrf_ci95"][0] > 5.0, table
    assert table["gru"]["bleu_ci95"][0] > table["freedict"]["bleu"], table
    assert table["gru_over_apertium_chrf"]["ratio"] >= MIN_FRACTION_OF_APERTIUM, table
