"""Open-set rejection through the plugin's public path (``PluginHarness``: the worker's
prepare -> batched infer -> result), on images from sources held out whole: none of
them was used in training or in choosing the detector (``outliers.SOURCES`` roles)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from streamproc_tagger.data import load_split
from streamproc_tagger.model import shipped_weights_dir
from streamproc_tagger.outliers import FONT_DIR, source
from tagger_testdata import bodies, harness, needs_fashion_mnist, photos, png_bytes

from streamproc.errors import ConfigError
from streamproc.testing import PluginHarness

__all__ = ["harness", "photos"]  # the fixtures, re-exported for pytest


def assert_rejected(body: dict) -> None:
    assert body["in_distribution"] is False and body["label"] == "unknown"
    assert body["rejected_reason"]
    assert len(body["tags"]) == 3  # the closed-set candidates stay, but are not the answer


# china.jpg (whole photo) is NOT in this list: it is a false accept (score 0.022, just above
# the 0.02 threshold; "sneaker"). Its source's false-accept rate is in the model card.
@pytest.mark.parametrize("name", ["chelsea", "astronaut", "flower"])
def test_photos_from_held_out_sources_are_rejected_as_unknown(
    harness: PluginHarness, photos: dict[str, bytes], name: str
) -> None:
    held_out = {"chelsea": "photo-chelsea-cat", "astronaut": "photo-astronaut"}
    assert source(held_out.get(name, "photo-sklearn-china-flower")).role == "test"
    (body,) = bodies(harness, [photos[name]])
    assert_rejected(body)
    assert body["rejected_reason"].startswith("not like the clothing")
    assert body["in_distribution_score"] < harness.plugin.rejection_threshold


def test_a_page_of_monospaced_text_is_rejected(harness: PluginHarness) -> None:
    assert source("text-dejavu-mono").role == "test"
    font = ImageFont.truetype(str(FONT_DIR / "DejaVuSansMono.ttf"), 18)
    page = Image.new("L", (420, 300), 255)
    text = "\n".join(["The quick brown fox jumps", "over the lazy dog. 0123456789", "Lorem ipsum dolor sit amet"] * 3)
    ImageDraw.Draw(page).multiline_text((12, 12), text, fill=0, font=font)
    (body,) = bodies(harness, [png_bytes(page)])
    assert_rejected(body)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uniform_noise_is_rejected(harness: PluginHarness, seed: int) -> None:
    assert source("uniform-noise").role == "test"
    noise = np.random.default_rng(seed).integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG" if seed % 2 else "PNG")
    (body,) = bodies(harness, [buffer.getvalue()])
    assert_rejected(body)


@pytest.mark.parametrize("size", [(1, 1), (64, 48), (300, 300)])
@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (120, 200, 30)])
def test_blank_and_one_pixel_images_are_rejected_as_blank(
    harness: PluginHarness, size: tuple[int, int], colour: tuple[int, int, int]
) -> None:
    (body,) = bodies(harness, [png_bytes(Image.new("RGB", size, colour))])
    assert_rejected(body)
    assert body["in_distribution_score"] == 0.0 and body["rejected_reason"].startswith("blank image")


@needs_fashion_mnist
def test_real_test_items_are_accepted_with_their_label_and_a_score(harness: PluginHarness) -> None:
    test = load_split("test")
    results = bodies(harness, [png_bytes(Image.fromarray(test.images[n, 0].numpy())) for n in range(50)])
    accepted = [b for b in results if b["in_distribution"]]
    assert len(accepted) >= 48
    for body in accepted:
        assert body["label"] == body["tags"][0]["label"] and "rejected_reason" not in body
        assert harness.plugin.rejection_threshold <= body["in_distribution_score"] <= 1.0


def test_zero_threshold_rejects_only_blank_images(photos: dict[str, bytes]) -> None:
    lenient = PluginHarness.load("tagger", {"rejection_threshold": 0.0})
    photo, blank = bodies(lenient, [photos["chelsea"], png_bytes(Image.new("L", (1, 1)))])
    assert photo["in_distribution"] is True and photo["label"] == photo["tags"][0]["label"]
    assert blank["in_distribution"] is False


def test_a_higher_threshold_rejects_a_superset(harness: PluginHarness, photos: dict[str, bytes]) -> None:
    images = [*photos.values(), png_bytes(Image.fromarray(load_split("test").images[0, 0].numpy()))]
    strict = bodies(PluginHarness.load("tagger", {"rejection_threshold": 0.5}), images)
    default = bodies(harness, images)
    for loose, tight in zip(default, strict, strict=True):
        assert loose["in_distribution_score"] == tight["in_distribution_score"]
        assert tight["in_distribution"] <= loose["in_distribution"]


@pytest.mark.parametrize("threshold", [-0.1, 1.0, 2, "0.02", True, None, float("nan")])
def test_invalid_rejection_threshold_is_a_config_error(threshold: object) -> None:
    with pytest.raises(ConfigError, match=r"^plugins\.tagger\.options\.rejection_threshold: "):
        PluginHarness.load("tagger", {"rejection_threshold": threshold})


def test_weights_folder_without_a_detector_is_a_config_error(tmp_path) -> None:
    for name in ("model.safetensors", "config.json"):
        (tmp_path / name).write_bytes((shipped_weights_dir() / name).read_bytes())
    with pytest.raises(ConfigError, match="open-set detector"):
        PluginHarness.load("tagger", {"weights_dir": str(tmp_path)})


def test_detector_fitted_for_other_weights_is_a_config_error(tmp_path) -> None:
    for name in ("model.safetensors", "config.json", "ood.safetensors", "ood.json"):
        (tmp_path / name).write_bytes((shipped_weights_dir() / name).read_bytes())
    config = json.loads((tmp_path / "ood.json").read_text())
    (tmp_path / "ood.json").write_text(json.dumps({**config, "model_version": "tagger-000000000000"}))
    with pytest.raises(ConfigError, match="fitted for tagger-000000000000, not for these weights"):
        PluginHarness.load("tagger", {"weights_dir": str(tmp_path)})


def test_a_copy_of_the_shipped_weights_loads_with_its_detector(tmp_path) -> None:
    for name in ("model.safetensors", "config.json", "ood.safetensors", "ood.json"):
        (tmp_path / name).write_bytes((shipped_weights_dir() / name).read_bytes())
    copy = PluginHarness.load("tagger", {"weights_dir": str(tmp_path)})
    assert copy.plugin.model_version == PluginHarness.load("tagger").plugin.model_version


def test_missing_weights_folder_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^plugins\.tagger\.options\.weights_dir: .* has no tagger weights"):
        PluginHarness.load("tagger", {"weights_dir": str(tmp_path / "nowhere")})
