"""Quality gate: the shipped tagger, evaluated fresh on the 10,000 test images."""

from __future__ import annotations

import pytest
import torch
from streamproc_tagger.data import load_split
from streamproc_tagger.evaluate import classification_metrics, majority_baseline, predict_logits
from streamproc_tagger.model import load_tagger
from streamproc_tagger.train import train_seed_baseline
from tagger_testdata import needs_fashion_mnist

SEED_CNN_EPOCHS = 2


@pytest.mark.quality
@needs_fashion_mnist
def test_shipped_tagger_reaches_93_percent_and_beats_the_seed_cnn() -> None:
    torch.set_num_threads(1)
    train, test = load_split("train"), load_split("test")
    model = load_tagger("cpu")
    tagger = classification_metrics(predict_logits(model, test.images), test.labels, float(model.temperature))
    seed_net = train_seed_baseline(train, epochs=SEED_CNN_EPOCHS, seed=0)
    seed_accuracy = classification_metrics(predict_logits(seed_net, test.images), test.labels)["accuracy"]
    print(f"tagger {tagger['accuracy']:.4f} vs seed CNN {seed_accuracy:.4f}")
    assert tagger["accuracy"] >= 0.93
    assert tagger["accuracy"] > seed_accuracy + 0.015
    assert tagger["accuracy"] > majority_baseline(train, test)["accuracy"] + 0.5
    assert tagger["ece_15_bins"] < 0.03
    assert min(tagger["per_class_accuracy"].values()) > 0.7
