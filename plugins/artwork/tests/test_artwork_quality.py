"""Quality gate: the shipped generator, measured fresh in the tagger's feature space."""

from __future__ import annotations

import pytest
import torch
from streamproc_artwork.evaluate import quality_report
from streamproc_artwork.model import load_generator
from streamproc_tagger.data import DATA_DIR
from streamproc_tagger.model import load_tagger

SAMPLES = 2_000


@pytest.mark.quality
@pytest.mark.skipif(not DATA_DIR.exists(), reason=f"{DATA_DIR} missing (dataset-fashion-mnist)")
def test_generated_images_are_near_real_ones_and_of_the_requested_class() -> None:
    torch.set_num_threads(1)
    report = quality_report(load_generator("cpu"), load_tagger("cpu"), SAMPLES, seed=1)
    fd = report["frechet_distance"]
    print(fd, report["class_agreement"])
    noise = min(fd["ceiling_uniform_noise"], fd["ceiling_gaussian_noise"])
    assert fd["floor_real_train_vs_test"] < fd["generated"]  # honest: not as good as real data
    assert fd["generated"] < 0.2 * noise  # measured: about 0.11 at 10k samples
    assert report["class_agreement"] >= 0.80
