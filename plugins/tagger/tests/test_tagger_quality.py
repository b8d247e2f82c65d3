"""Quality gates of the shipped tagger: test accuracy against the seed CNN, accuracy on
product-style renderings against the plain images, and open-set rejection against the
max-softmax baseline on sources held out whole. The full-size figures are in
``weights/model_card.json`` (``python -m streamproc_tagger.evaluate --open-set``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from streamproc_tagger.data import load_split, to_float
from streamproc_tagger.metrics import (
    auroc,
    classification_metrics,
    false_accept_rate,
    majority_baseline,
    predict_logits,
    wilson_ci,
)
from streamproc_tagger.model import load_tagger, shipped_weights_dir
from streamproc_tagger.openset import load_detector, model_outputs
from streamproc_tagger.outliers import outlier_images
from streamproc_tagger.outliers import sources as outlier_sources
from streamproc_tagger.product import EVALUATION_STYLES, render_set
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


OPEN_SET_ITEMS = 1000
OPEN_SET_PER_SOURCE = 30
FALSE_ACCEPT_MARGIN = 0.02  # measured on this subset: 0.022 vs max-softmax 0.061
AUROC_FLOOR = 0.98  # measured: 0.994 (max-softmax 0.993: after outlier exposure both rank well)


@pytest.mark.quality
@needs_fashion_mnist
def test_shipped_detector_rejects_held_out_outliers_better_than_max_softmax() -> None:
    """On a small fixed subset (1,000 test items; 30 images of each test-role source, never
    used in training or selection) the shipped detector beats the max-softmax baseline."""
    torch.set_num_threads(1)
    folder = shipped_weights_dir()
    model, detector = load_tagger("cpu", folder), load_detector(folder)
    test = load_split("test").subset(np.arange(OPEN_SET_ITEMS))
    inside = model_outputs(model, to_float(test.images))
    outside = model_outputs(
        model, to_float(torch.cat([outlier_images(s, OPEN_SET_PER_SOURCE, seed=7) for s in outlier_sources("test")]))
    )
    ours_in, ours_out = detector.in_distribution_score(inside).numpy(), detector.in_distribution_score(outside).numpy()
    msp_in = torch.softmax(inside.logits / float(model.temperature), 1).amax(1).numpy()
    msp_out = torch.softmax(outside.logits / float(model.temperature), 1).amax(1).numpy()
    ours = auroc(ours_in, ours_out), false_accept_rate(ours_in, ours_out)
    baseline = auroc(msp_in, msp_out), false_accept_rate(msp_in, msp_out)
    print(f"detector AUROC {ours[0]:.4f} false accept {ours[1]:.4f}; max-softmax {baseline[0]:.4f} {baseline[1]:.4f}")
    assert ours[0] >= AUROC_FLOOR and ours[0] >= baseline[0] - 0.005
    assert ours[1] <= baseline[1] - FALSE_ACCEPT_MARGIN
    assert ours[1] <= 0.10


PRODUCT_ITEMS = 2000
PRODUCT_TOLERANCE = 0.01  # the target: within 1 point of the plain accuracy
# measured on these 2,000 items: plain 0.9410; inverted 0.9360, rgb-jpeg-112px 0.9385,
# off-centre-padded 0.9370, coloured-jpeg-on-grey 0.9380


@pytest.mark.quality
@needs_fashion_mnist
@pytest.mark.parametrize("style", sorted(EVALUATION_STYLES))
def test_product_style_renderings_keep_the_plain_test_accuracy(style: str) -> None:
    """The first 2,000 test items rendered as product shots (dark on white, RGB JPEG,
    off-centre on a larger canvas ...) and preprocessed as the plugin does are tagged
    within 1 point of the same items as plain dataset images."""
    torch.set_num_threads(1)
    model = load_tagger("cpu")
    test = load_split("test").subset(np.arange(PRODUCT_ITEMS))
    plain = float((predict_logits(model, test.images).argmax(1) == test.labels).float().mean())
    rendered_images = render_set(test.images, EVALUATION_STYLES[style])
    rendered = float((predict_logits(model, rendered_images).argmax(1) == test.labels).float().mean())
    print(f"{style}: rendered {rendered:.4f} vs plain {plain:.4f}")
    assert rendered >= plain - PRODUCT_TOLERANCE


CALIBRATION_ITEMS = 2000


@pytest.mark.quality
@needs_fashion_mnist
@pytest.mark.parametrize("threshold", [0.02, 0.1, 0.5])
def test_in_distribution_score_rejects_about_its_threshold_of_real_items(threshold: float) -> None:
    """The score is a conformal p-value against validation items: on 2,000 held-out test
    items, a threshold t rejects a fraction of them whose 95% Wilson interval holds t
    (widened by 1 point for the small shift between validation and test items)."""
    torch.set_num_threads(1)
    folder = shipped_weights_dir()
    model, detector = load_tagger("cpu", folder), load_detector(folder)
    test = load_split("test").subset(np.arange(CALIBRATION_ITEMS))
    scores = detector.in_distribution_score(model_outputs(model, to_float(test.images)))
    rejected = int((scores < threshold).sum())
    low, high = wilson_ci(rejected, CALIBRATION_ITEMS)
    print(f"threshold {threshold}: rejected {rejected / CALIBRATION_ITEMS:.4f} [{low}, {high}]")
    assert low - 0.01 <= threshold <= high + 0.01
