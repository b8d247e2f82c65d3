"""Quality of the shipped weights on the held-out verses, against fresh baselines."""

from __future__ import annotations

import pytest
import torch
from streamproc_translator.baselines import FREEDICT_DATA
from streamproc_translator.evaluate import evaluate


@pytest.mark.quality
@pytest.mark.skipif(not FREEDICT_DATA.exists(), reason="needs dict-freedict-eng-spa")
def test_shipped_model_beats_dictionary_and_copy_baselines_on_heldout_verses() -> None:
    torch.set_num_threads(1)
    metrics = evaluate()
    assert metrics["pairs"] == 500
    for baseline in ("dictionary", "copy"):
        assert metrics["model"]["bleu"] > metrics[baseline]["bleu"], metrics
        assert metrics["model"]["chrf"] > metrics[baseline]["chrf"], metrics
