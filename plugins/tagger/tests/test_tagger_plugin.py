"""The tagger plugin, discovered through its entry point and run as the worker runs it
(``streamproc.testing.PluginHarness``), on real and malformed images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from streamproc_tagger.data import CLASS_LABELS, load_split
from streamproc_tagger.plugin import TaggerPlugin
from streamproc_tagger.preprocess import image_tensor
from tagger_testdata import bodies, harness, needs_fashion_mnist, photos, png_bytes, random_bytes, upload

from streamproc.errors import ConfigError
from streamproc.events import ArtworkRequest
from streamproc.testing import PluginHarness, check_contract

__all__ = ["harness", "photos"]  # the fixtures, re-exported for pytest


def test_entry_point_declares_tagger_for_uploads(harness: PluginHarness) -> None:
    plugin = harness.plugin
    assert (plugin.name, plugin.consumes, plugin.produces) == ("tagger", ("upload",), "tags")
    assert plugin.model_version.startswith("tagger-") and len(plugin.model_version) == 19


def test_tagger_meets_the_plugin_contract(photos: dict[str, bytes]) -> None:
    torch.set_num_threads(1)
    items = [png_bytes(Image.fromarray(load_split("test").images[n, 0].numpy())) for n in range(3)]
    events = [
        *(upload(image, n) for n, image in enumerate([*photos.values(), *items])),
        upload(png_bytes(Image.new("RGB", (1, 1), (200, 10, 10))), 10),  # blank: rejected
        upload(None, 11, artwork=ArtworkRequest(category="bag")),  # not for the tagger: skipped
        upload(b"\x89PNG\r\n\x1a\n" + bytes(30), 12),  # corrupt: refused, in the same words on every run
    ]
    report = check_contract(lambda: PluginHarness.load("tagger"), events)
    assert (report.results, report.skipped, report.failed) == (len(events) - 2, 1, 1)


def test_real_photos_get_top3_tags_sorted_by_probability(harness: PluginHarness, photos: dict[str, bytes]) -> None:
    for body in bodies(harness, list(photos.values())):
        probs = [tag["probability"] for tag in body["tags"]]
        assert len(body["tags"]) == 3
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
        assert {tag["label"] for tag in body["tags"]} <= set(CLASS_LABELS)
        assert body["model_version"] == harness.plugin.model_version


@needs_fashion_mnist
def test_test_set_products_shot_on_white_are_tagged_like_the_dataset(harness: PluginHarness) -> None:
    """Fashion-MNIST test images, negated to black-on-white and enlarged to 112x112 RGB
    PNG/JPEG (like product photos), keep the model's test accuracy and are not rejected."""
    test = load_split("test")
    images = []
    for n in range(200):
        pixels = 255 - test.images[n, 0].numpy()
        photo = Image.fromarray(pixels).resize((112, 112), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        photo.convert("RGB").save(buffer, format="JPEG" if n % 2 else "PNG", quality=90)
        images.append(buffer.getvalue())
    results = bodies(harness, images)
    top1 = [CLASS_LABELS.index(body["tags"][0]["label"]) for body in results]
    accuracy = float(np.mean(np.array(top1) == test.labels[:200].numpy()))
    assert accuracy >= 0.9
    assert sum(body["in_distribution"] for body in results) >= 190


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_png_modes_are_preprocessed_to_28x28_in_unit_range(
    harness: PluginHarness, photos: dict[str, bytes], mode: str
) -> None:
    photo = Image.open(io.BytesIO(photos["chelsea"]))
    if mode == "I;16":
        wide = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(wide)
    elif mode == "RGBA":
        image = photo.convert("RGBA")
        image.putalpha(Image.linear_gradient("L").resize(photo.size))
    else:
        image = photo.convert(mode)
    (body,) = bodies(harness, [png_bytes(image)])
    tensor = image_tensor(png_bytes(image))
    assert tensor.shape == (1, 28, 28) and tensor.dtype == torch.float32
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    assert len(body["tags"]) == 3


def test_bright_background_is_inverted_and_object_fills_the_frame() -> None:
    canvas = np.full((300, 200), 250, dtype=np.uint8)
    canvas[100:200, 50:150] = 10  # a dark square on white
    tensor = image_tensor(png_bytes(Image.fromarray(canvas)))
    assert float(tensor[0, 14, 14]) > 0.9  # the object is now bright, trimmed to fill
    assert float(tensor.mean()) > 0.8


def test_preprocessing_is_deterministic(photos: dict[str, bytes]) -> None:
    assert torch.equal(image_tensor(photos["china"]), image_tensor(photos["china"]))


def test_truncated_png_is_refused_at_prepare_with_its_reason(harness: PluginHarness, photos: dict[str, bytes]) -> None:
    data = photos["astronaut"]
    (outcome,) = harness.run([upload(data[: len(data) // 2])])
    assert outcome.failure is not None and outcome.failure.stage == "prepare"
    assert outcome.failure.reason.startswith("image: corrupt or truncated PNG")


@pytest.mark.parametrize("prefix", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"])
def test_random_bytes_are_refused_at_prepare_with_an_image_reason(harness: PluginHarness, prefix: bytes) -> None:
    (outcome,) = harness.run([upload(prefix + random_bytes(2000))])
    assert outcome.failure is not None and outcome.failure.stage == "prepare"
    assert outcome.failure.reason.startswith("image: ")


def test_upload_without_image_is_not_for_the_tagger(harness: PluginHarness) -> None:
    (outcome,) = harness.run([upload(None, artwork=ArtworkRequest(category="bag"))])
    assert outcome.skipped


def test_upload_with_only_an_image_uri_is_refused_with_reason(harness: PluginHarness) -> None:
    (outcome,) = harness.run([upload(None, image_uri="https://example.com/a.png")])
    assert outcome.failure is not None and outcome.failure.reason.startswith("image_uri: ")


def test_top_k_option_sets_the_number_of_tags(photos: dict[str, bytes]) -> None:
    (body,) = bodies(PluginHarness.load("tagger", {"top_k": 5}), [photos["flower"]])
    assert len(body["tags"]) == 5


@pytest.mark.parametrize("top_k", [0, 11, "3", True, 2.0])
def test_invalid_top_k_option_is_a_config_error(top_k: object) -> None:
    with pytest.raises(ConfigError, match=r"^plugins\.tagger\.options\.top_k: "):
        PluginHarness.load("tagger", {"top_k": top_k})


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^plugins\.tagger\.options\.threshold: "):
        PluginHarness.load("tagger", {"threshold": 0.1})


def test_every_option_is_described() -> None:
    assert TaggerPlugin.Options is not None
    fields = TaggerPlugin.Options.model_fields
    assert set(fields) == {"top_k", "rejection_threshold", "weights_dir"}
    assert all(field.description for field in fields.values())
