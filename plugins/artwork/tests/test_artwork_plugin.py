"""The artwork plugin, discovered through its entry point: seeded, batched, validated."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import ArtworkRequest, UploadEvent
from streamproc.plugin import Plugin
from streamproc.testing import PluginHarness, check_contract


@pytest.fixture(scope="module")
def harness() -> PluginHarness:
    torch.set_num_threads(1)
    return PluginHarness.load("artwork")


@pytest.fixture(scope="module")
def plugin(harness: PluginHarness) -> Plugin:
    return harness.plugin


def request(category: str = "sneaker", count: int = 2, seed: int = 7, n: int = 0) -> UploadEvent:
    return UploadEvent(
        id=f"evt-{n}",
        type="upload",
        ts=1_700_000_000_000 + n,
        user_id="user-1",
        upload_id=f"upload-{n}",
        title="please draw",
        artwork=ArtworkRequest(category=category, count=count, seed=seed),
    )


def generate(harness: PluginHarness, events: list[UploadEvent]) -> list[dict]:
    """Result bodies through the worker's path (prepare, batched infer, result)."""
    bodies = harness.results(events)
    assert all(body is not None for body in bodies)
    return bodies  # type: ignore[return-value]


def decode(png_b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_b64))))


def test_entry_point_declares_artwork_for_uploads(plugin: Plugin) -> None:
    assert (plugin.name, plugin.consumes, plugin.produces) == ("artwork", ("upload",), "artwork")
    assert plugin.model_version.startswith("artwork-") and len(plugin.model_version) == 20


def test_request_yields_count_grayscale_pngs_at_the_native_28x28(harness: PluginHarness, plugin: Plugin) -> None:
    (body,) = generate(harness, [request("bag", count=3)])
    assert body["category"] == "bag" and body["format"] == "png" and len(body["images"]) == 3
    assert (body["width"], body["height"], body["native_size"], body["upscaling"]) == (28, 28, 28, "none")
    for image in body["images"]:
        pixels = decode(image)
        assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
        assert pixels.std() > 10  # a drawing, not a blank canvas
    assert body["model_version"] == plugin.model_version


def test_replayed_request_gives_identical_png_bytes(harness: PluginHarness) -> None:
    (first,) = generate(harness, [request(seed=123)])
    (again,) = generate(PluginHarness.load("artwork"), [request(seed=123)])
    (other,) = generate(harness, [request(seed=124)])
    assert first["images"] == again["images"]
    assert first["images"] != other["images"]
    assert first["images"][0] != first["images"][1]  # images within a request differ


def test_batch_of_requests_gives_the_same_images_as_one_by_one(harness: PluginHarness) -> None:
    events = [
        request("sneaker", 1, 1, n=0),
        request("dress", 3, 2, n=1),
        request("Ankle boot", 2, 3, n=2),
    ]
    batched = generate(harness, events)
    for event, body in zip(events, batched, strict=True):
        (single,) = generate(harness, [event])
        for a, b in zip(body["images"], single["images"], strict=True):
            diff = np.abs(decode(a).astype(int) - decode(b).astype(int))
            assert diff.max() <= 1


@pytest.mark.parametrize(
    ("category", "label"),
    [
        ("Sneaker", "sneaker"),
        ("SNEAKERS", "sneaker"),
        ("ankle boot", "ankle-boot"),
        ("T-shirt/top", "t-shirt"),
        ("tshirt", "t-shirt"),
        ("jacket", "coat"),
        (" Trousers ", "trouser"),
    ],
)
def test_categories_are_case_insensitive_with_aliases(harness: PluginHarness, category: str, label: str) -> None:
    (body,) = generate(harness, [request(category, count=1)])
    assert body["category"] == label


def test_unknown_category_is_refused_listing_the_known_ones(plugin: Plugin) -> None:
    with pytest.raises(InvalidInput, match=r"^artwork\.category: unknown .*sneaker, bag"):
        plugin.prepare(request("spaceship"), None)


def test_upload_without_artwork_request_is_not_for_this_plugin(plugin: Plugin) -> None:
    event = UploadEvent(id="e", type="upload", ts=0, user_id="u", upload_id="up", title="just a title")
    assert plugin.prepare(event, None) is None


def test_larger_image_size_is_a_bilinear_upscale_labelled_in_the_result(harness: PluginHarness) -> None:
    (native,) = generate(harness, [request(count=1)])
    (body,) = generate(PluginHarness.load("artwork", {"image_size": 64}), [request(count=1)])
    assert (body["width"], body["height"], body["native_size"], body["upscaling"]) == (64, 64, 28, "bilinear")
    upscaled = Image.fromarray(decode(native["images"][0])).resize((64, 64), Image.Resampling.BILINEAR)
    assert np.array_equal(decode(body["images"][0]), np.asarray(upscaled))  # the same drawing, more pixels


@pytest.mark.parametrize("size", [27, 257, "64", False])
def test_invalid_image_size_option_is_a_config_error(size: object) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        PluginHarness.load("artwork", {"image_size": size})


def test_artwork_meets_the_plugin_contract() -> None:
    events = [request("bag", 2, 5, n=0), request("sneaker", 1, 6, n=1), request("dress", 1, 7, n=2)]
    events.append(UploadEvent(id="e", type="upload", ts=0, user_id="u", upload_id="up", title="no request"))
    # PNG pixels may differ by one level between batch sizes (checked above): not byte-invariant
    report = check_contract(lambda: PluginHarness.load("artwork"), events, batch_invariant=False)
    assert (report.results, report.skipped) == (3, 1)
