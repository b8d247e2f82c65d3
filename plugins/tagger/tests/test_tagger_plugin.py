"""The tagger plugin, discovered through its entry point, on real and malformed images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from streamproc_tagger.data import CLASS_LABELS, load_split
from streamproc_tagger.preprocess import image_tensor
from tagger_testdata import needs_fashion_mnist, photos, png_bytes, random_bytes, upload

from streamproc.errors import ConfigError, InvalidInput, MediaError
from streamproc.events import ArtworkRequest
from streamproc.plugin import Plugin
from streamproc.registry import load_plugin

__all__ = ["photos"]  # the fixture, re-exported for pytest


@pytest.fixture(scope="module")
def plugin() -> Plugin:
    torch.set_num_threads(1)
    return load_plugin("tagger")


def run(plugin: Plugin, images: list[bytes]) -> list[dict]:
    events = [upload(image, n) for n, image in enumerate(images)]
    outputs = plugin.infer([plugin.prepare(event, None) for event in events])
    assert len(outputs) == len(events)
    return [dict(plugin.result(e, o)) for e, o in zip(events, outputs, strict=True)]


def test_entry_point_declares_tagger_for_uploads(plugin: Plugin) -> None:
    assert (plugin.name, plugin.consumes, plugin.produces) == ("tagger", ("upload",), "tags")
    assert plugin.model_version.startswith("tagger-") and len(plugin.model_version) == 19


def test_real_photos_get_top3_tags_sorted_by_probability(plugin: Plugin, photos: dict[str, bytes]) -> None:
    results = run(plugin, list(photos.values()))
    for body in results:
        probs = [tag["probability"] for tag in body["tags"]]
        assert len(body["tags"]) == 3
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
        assert {tag["label"] for tag in body["tags"]} <= set(CLASS_LABELS)
        assert body["model_version"] == plugin.model_version


def test_batch_gives_the_same_outputs_as_one_by_one(plugin: Plugin, photos: dict[str, bytes]) -> None:
    images = list(photos.values())
    batched = plugin.infer([plugin.prepare(upload(b, n), None) for n, b in enumerate(images)])
    for n, image in enumerate(images):
        (single,) = plugin.infer([plugin.prepare(upload(image, n), None)])
        torch.testing.assert_close(batched[n], single, atol=1e-5, rtol=1e-4)


@needs_fashion_mnist
def test_test_set_products_shot_on_white_are_tagged_like_the_dataset(plugin: Plugin) -> None:
    """Fashion-MNIST test images, negated to black-on-white and enlarged to 112x112 RGB
    PNG/JPEG (like product photos), keep the model's test accuracy."""
    test = load_split("test")
    images = []
    for n in range(200):
        pixels = 255 - test.images[n, 0].numpy()
        photo = Image.fromarray(pixels).resize((112, 112), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        photo.convert("RGB").save(buffer, format="JPEG" if n % 2 else "PNG", quality=90)
        images.append(buffer.getvalue())
    results = run(plugin, images)
    top1 = [CLASS_LABELS.index(body["tags"][0]["label"]) for body in results]
    accuracy = float(np.mean(np.array(top1) == test.labels[:200].numpy()))
    assert accuracy >= 0.85


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_png_modes_are_preprocessed_to_28x28_in_unit_range(plugin: Plugin, photos: dict[str, bytes], mode: str) -> None:
    photo = Image.open(io.BytesIO(photos["chelsea"]))
    if mode == "I;16":
        wide = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(wide)
    elif mode == "RGBA":
        image = photo.convert("RGBA")
        image.putalpha(Image.linear_gradient("L").resize(photo.size))
    else:
        image = photo.convert(mode)
    (body,) = run(plugin, [png_bytes(image)])
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


def test_truncated_png_is_refused_with_media_error(plugin: Plugin, photos: dict[str, bytes]) -> None:
    data = photos["astronaut"]
    with pytest.raises(MediaError, match="image: corrupt or truncated PNG"):
        plugin.prepare(upload(data[: len(data) // 2]), None)


@pytest.mark.parametrize("prefix", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"])
def test_random_bytes_are_refused_with_media_error(plugin: Plugin, prefix: bytes) -> None:
    with pytest.raises(MediaError, match=r"^image: "):
        plugin.prepare(upload(prefix + random_bytes(2000)), None)


def test_upload_without_image_is_not_for_the_tagger(plugin: Plugin) -> None:
    event = upload(None, artwork=ArtworkRequest(category="bag"))
    assert plugin.prepare(event, None) is None


def test_upload_with_only_an_image_uri_is_refused_with_reason(plugin: Plugin) -> None:
    with pytest.raises(InvalidInput, match=r"^image_uri: "):
        plugin.prepare(upload(None, image_uri="https://example.com/a.png"), None)


def test_top_k_option_sets_the_number_of_tags(photos: dict[str, bytes]) -> None:
    (body,) = run(load_plugin("tagger", {"top_k": 5}), [photos["flower"]])
    assert len(body["tags"]) == 5


@pytest.mark.parametrize("top_k", [0, 11, "3", True])
def test_invalid_top_k_option_is_a_config_error(top_k: object) -> None:
    with pytest.raises(ConfigError, match="top_k"):
        load_plugin("tagger", {"top_k": top_k})
