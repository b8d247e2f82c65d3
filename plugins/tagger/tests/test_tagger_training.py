"""The open-set training path (product-style renderings + outlier exposure), end to end on
a small slice: it runs, uses only train-role outliers, and fine-tuning keeps the model."""

from __future__ import annotations

import math

import numpy as np
import torch
from streamproc_tagger.data import load_split, split_train_validation
from streamproc_tagger.model import shipped_weights_dir
from streamproc_tagger.outliers import sources
from streamproc_tagger.train import build_parser, open_set_training, train_tagger
from tagger_testdata import needs_fashion_mnist

ARGS = [
    "--epochs", "1", "--batch-size", "64", "--lr", "1e-4", "--product-augment", "0.5",
    "--outlier-exposure", "0.5", "--outlier-batch", "16", "--outliers-per-source", "8",
]  # fmt: skip


@needs_fashion_mnist
def test_open_set_fine_tuning_runs_on_a_slice_and_keeps_the_model(tmp_path) -> None:
    torch.set_num_threads(1)
    fit, val = split_train_validation(load_split("train"))
    fit, val = fit.subset(np.arange(512)), val.subset(np.arange(256))  # 8 steps: one-cycle needs >= 8
    args = build_parser().parse_args([*ARGS, "--init-weights", str(shipped_weights_dir())])
    model, history = train_tagger(fit, val, args)
    (epoch,) = history
    assert math.isfinite(epoch["train_loss"])
    assert epoch["val_accuracy"] >= 0.85  # a gentle fine-tune does not wreck the shipped model
    assert not model.training


@needs_fashion_mnist
def test_outlier_exposure_draws_only_on_train_role_sources() -> None:
    fit = load_split("train").subset(np.arange(4))
    args = build_parser().parse_args(ARGS)
    plan = open_set_training(fit, args)
    assert plan.outliers is not None and len(plan.outliers) == 8 * len(sources("train"))
    assert plan.product_images is not None and plan.product_images.shape == fit.images.shape
    assert {s.role for s in sources("train")} == {"train"}
    names = {s.name for s in sources("train")}
    assert not names & {s.name for s in sources("validation")} and not names & {s.name for s in sources("test")}
