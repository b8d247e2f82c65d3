"""The enhancer plugin, discovered through its entry point: routes, scales, bounds, errors."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from streamproc.errors import ConfigError
from streamproc.events import ArtworkRequest, DerivedEvent, UploadEvent
from streamproc.records import DEFAULT_MAX_RESULT_BYTES
from streamproc.testing import PluginHarness, check_contract


@pytest.fixture(scope="module")
def harness() -> PluginHarness:
    torch.set_num_threads(1)
    return PluginHarness.load("enhancer")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def photo(side: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth colour gradient with some texture (not a flat canvas)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    channels = [255 * (0.5 + 0.4 * np.sin(6 * xx + k) * np.cos(4 * yy - k)) for k in range(3)]
    pixels = np.clip(np.dstack(channels) + rng.normal(0, 3, (side, side, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    return image.convert(mode)


def upload(image: Image.Image | None, n: int = 0) -> UploadEvent:
    return UploadEvent(
        id=f"evt-{n}",
        type="upload",
        ts=1_700_000_000_000 + n,
        user_id="user-1",
        upload_id=f"upload-{n}",
        image=None if image is None else png(image),
        title="a thumbnail",
    )


def artwork(images: list[Image.Image], n: int = 0) -> DerivedEvent:
    origin = upload(None, n).model_copy(update={"artwork": ArtworkRequest(category="bag", count=len(images))})
    body = {
        "category": "bag",
        "seed": 3,
        "format": "png",
        "images": [base64.b64encode(png(image)).decode() for image in images],
    }
    return DerivedEvent(type="artwork", plugin="artwork", body=body, origin=origin)


def decode(png_b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(png_b64)))


def test_entry_point_consumes_uploads_and_artwork_results(harness: PluginHarness) -> None:
    plugin = harness.plugin
    assert (plugin.name, plugin.consumes, plugin.produces) == ("enhancer", ("upload", "artwork"), "enhance")
    assert plugin.model_version.startswith("enhancer-") and len(plugin.model_version) == 21


def test_thumbnail_upload_is_upscaled_to_reach_the_minimum_side(harness: PluginHarness) -> None:
    (x2, x4) = harness.results([upload(photo(64), 0), upload(photo(32), 1)])
    assert (x2["source"], x2["scale"], x2["width"], x2["height"]) == ("upload", 2, 128, 128)
    assert (x4["scale"], x4["width"]) == (4, 128)
    image = decode(x2["images"][0])
    assert image.size == (128, 128) and image.mode == "RGB"


def test_output_is_close_to_the_input_colours(harness: PluginHarness) -> None:
    source = photo(48, seed=5)
    (body,) = harness.results([upload(source)])
    restored = np.asarray(decode(body["images"][0]).resize(source.size, Image.Resampling.BICUBIC), dtype=float)
    assert np.abs(restored - np.asarray(source, dtype=float)).mean() < 6.0


def test_grayscale_stays_grayscale(harness: PluginHarness) -> None:
    (body,) = harness.results([upload(photo(40, mode="L"))])
    assert decode(body["images"][0]).mode == "L"


def test_generated_artwork_reaches_at_least_112_pixels(harness: PluginHarness) -> None:
    drawings = [photo(64, mode="L", seed=1), photo(64, mode="L", seed=2)]
    (body,) = harness.results([artwork(drawings), artwork([photo(28, mode="L")], n=1)])[:1]
    assert (body["source"], body["category"], body["seed"], body["scale"]) == ("artwork", "bag", 3, 2)
    assert [decode(image).size for image in body["images"]] == [(128, 128), (128, 128)]
    (small,) = harness.results([artwork([photo(28, mode="L")], n=1)])
    assert small["scale"] == 4 and decode(small["images"][0]).size == (112, 112)


def test_uploads_without_image_bytes_are_skipped(harness: PluginHarness) -> None:
    assert harness.results([upload(None, 1)]) == [None]


def test_tiled_upscaling_equals_the_whole_image_at_once_seams_included() -> None:
    source = photo(300, seed=4).crop((0, 0, 300, 200))
    whole = PluginHarness.load("enhancer", options={"tile_side": 512, "scale": 4})
    tiled = PluginHarness.load("enhancer", options={"tile_side": 64, "scale": 4})  # 6 x 4 tiles of 64 px
    (one,) = whole.results([upload(source)])
    (pieces,) = tiled.results([upload(source)])
    assert (pieces["width"], pieces["height"]) == (1200, 800)
    difference = np.abs(
        np.asarray(decode(one["images"][0]), dtype=int) - np.asarray(decode(pieces["images"][0]), dtype=int)
    )
    assert difference.max() <= 1  # floating-point rounding flips a level at most
    assert difference.mean() < 0.01


def test_the_largest_upload_within_the_bound_fits_the_result_size_limit(harness: PluginHarness) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (500, 500, 3), dtype=np.uint8)  # PNG cannot compress it
    (outcome,) = harness.run([upload(Image.fromarray(noise, mode="RGB"))])
    assert outcome.body is not None and (outcome.body["scale"], outcome.body["width"]) == (2, 1000)
    assert len(outcome.body_json.encode()) < DEFAULT_MAX_RESULT_BYTES


def test_an_upload_over_the_bound_is_refused_from_its_header_before_decoding(harness: PluginHarness) -> None:
    header = png(Image.new("L", (2100, 2100)))[:33]  # signature and IHDR: 2100 x 2100 pixels
    truncated = header + b"\0\0\0\x08IDATgarbage!\0\0\0\0"  # its pixels could never be decoded
    (outcome,) = harness.run([upload(None).model_copy(update={"image": truncated})])
    assert outcome.failure is not None and outcome.failure.stage == "prepare"
    assert "2100x2100" in outcome.failure.reason and str(1_000_000 // 4) in outcome.failure.reason


def test_an_upload_requesting_artwork_gets_its_one_result_through_the_artwork_chain(harness: PluginHarness) -> None:
    asking = upload(photo(64)).model_copy(update={"artwork": ArtworkRequest(category="bag")})
    assert harness.results([asking]) == [None]


def test_batch_gives_the_same_pixels_as_one_by_one(harness: PluginHarness) -> None:
    events = [upload(photo(64, seed=s), s) for s in range(3)] + [upload(photo(32, seed=9), 3)]
    batched = harness.results(events)
    single = [harness.results([event])[0] for event in events]
    assert [b["images"] for b in batched] == [s["images"] for s in single]


def test_work_above_the_output_bound_is_refused_with_the_sizes() -> None:
    small = PluginHarness.load("enhancer", options={"max_output_pixels": 10_000})
    (outcome,) = small.run([upload(photo(40))])  # 1,600 pixels decoded, x4 (auto) gives 25,600
    assert outcome.failure is not None and outcome.failure.stage == "prepare"
    assert "40x40" in outcome.failure.reason and "10000" in outcome.failure.reason


def test_bad_inputs_are_refused_with_reasons(harness: PluginHarness) -> None:
    corrupt = upload(None).model_copy(update={"image": b"\x89PNG\r\n\x1a\nnot really"})
    empty_artwork = DerivedEvent(type="artwork", plugin="artwork", body={"images": []}, origin=upload(None))
    outcomes = harness.run([corrupt, empty_artwork])
    assert [o.failure.stage for o in outcomes if o.failure] == ["prepare", "prepare"]
    assert "PNG" in outcomes[0].failure.reason and "images" in outcomes[1].failure.reason


def test_weights_dir_without_weights_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="weights_dir"):
        PluginHarness.load("enhancer", options={"weights_dir": str(tmp_path)})


def test_plugin_keeps_the_contract() -> None:
    events = [upload(photo(32, seed=s), s) for s in range(4)] + [artwork([photo(28, mode="L")], n=5)]
    report = check_contract(lambda: PluginHarness.load("enhancer"), events)
    assert report.events == len(events)
