"""Quality gate: the shipped generator, measured fresh by the tagger and by the independent judge.

One report (2,000 generated images, 200 per class; seed 1) feeds every test. The bounds
are looser than the 10,000-sample figures of the model card (README, "Measured quality")
to absorb the smaller sample, and each is set against a real-image baseline measured in
the same run.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from streamproc_artwork.evaluate import quality_report
from streamproc_artwork.judge import load_judge
from streamproc_artwork.model import load_generator
from streamproc_tagger.data import DATA_DIR
from streamproc_tagger.model import load_tagger

SAMPLES = 2_000
JUDGE_ACCURACY_MIN = 0.89  # measured: 0.9036 on the 10,000 test images
AGREEMENT_MIN = 0.94  # issue 16's bar is 0.95; measured: 0.953 [0.949, 0.957] (10,000, seed 0), 0.956 here
SPREAD_MIN = {"judge_features": 0.87, "pixels": 0.95}  # bar 0.90; measured 0.915 and 1.085 (10,000), 0.929 here
SPREAD_MAX = {"judge_features": 1.0, "pixels": 1.2}  # real vs real is 1.0: more varied than real is noise
SPREAD_CLASS_MIN = {"judge_features": 0.65, "pixels": 0.85}  # measured: weakest 0.72 (shirt), 0.98 (t-shirt)

pytestmark = [
    pytest.mark.quality,
    pytest.mark.skipif(not DATA_DIR.exists(), reason=f"{DATA_DIR} missing (dataset-fashion-mnist)"),
]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    torch.set_num_threads(1)
    return quality_report(load_generator("cpu"), load_tagger("cpu"), load_judge(), SAMPLES, seed=1)


def test_generated_images_are_near_real_ones_in_the_taggers_features(report: dict[str, Any]) -> None:
    fd = report["frechet_distance"]
    noise = min(fd["ceiling_uniform_noise"], fd["ceiling_gaussian_noise"])
    assert fd["floor_real_train_vs_test"] < fd["generated"]  # honest: not as good as real data
    assert fd["generated"] < 0.2 * noise
    assert report["class_agreement"] >= 0.80


def test_independent_judge_agrees_with_the_requested_class(report: dict[str, Any]) -> None:
    judge = report["judge"]
    assert judge["test_accuracy"]["overall"]["n"] == 10_000
    assert judge["test_accuracy"]["overall"]["rate"] >= JUDGE_ACCURACY_MIN  # the judge itself, on real images
    agreement = judge["agreement"]["overall"]
    assert agreement["n"] == SAMPLES
    assert agreement["rate"] >= AGREEMENT_MIN


@pytest.mark.parametrize("space", ["judge_features", "pixels"])
def test_within_class_spread_is_close_to_real_images(report: dict[str, Any], space: str) -> None:
    spread = report["judge"]["spread"][space]
    control = spread["control_real_train"]
    assert control["ci95"][0] < 1.0 < control["ci95"][1]  # the baseline: real images vs real images
    generated = spread["overall"]
    assert generated["n_generated"] == generated["n_real"] == SAMPLES
    assert SPREAD_MIN[space] <= generated["ratio"] <= SPREAD_MAX[space]
    assert min(ratio["ratio"] for ratio in spread["per_class"].values()) >= SPREAD_CLASS_MIN[space]
