"""The detector plugin, discovered through its entry point: boxes, labels, scores, refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from streamproc_detector.boxes import iou_matrix, nms
from streamproc_detector.scenes import SCENE_SIDE, SceneMaker
from streamproc_tagger.data import CLASS_LABELS, DATA_DIR, load_split

from streamproc.errors import ConfigError
from streamproc.events import UploadEvent
from streamproc.testing import PluginHarness, check_contract

pytestmark = pytest.mark.skipif(not DATA_DIR.exists(), reason=f"{DATA_DIR} missing (dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def harness() -> PluginHarness:
    torch.set_num_threads(1)
    return PluginHarness.load("detector")


@pytest.fixture(scope="module")
def scenes() -> list:
    """Scenes of TEST items on a few held-out backgrounds."""
    maker = SceneMaker.for_role("test", "heldout", per_source=1)
    rng = np.random.default_rng(3)
    return [maker.scene(rng) for _ in range(12)]


def upload(pixels: np.ndarray | None, n: int = 0, uri: str | None = None) -> UploadEvent:
    data = None
    if pixels is not None:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        data = buffer.getvalue()
    return UploadEvent(
        id=f"evt-{n}", type="upload", ts=1_700_000_000_000, user_id="u", upload_id=f"up-{n}", image=data, image_uri=uri
    )


def test_entry_point_declares_objects_for_uploads(harness: PluginHarness) -> None:
    plugin = harness.plugin
    assert (plugin.name, plugin.consumes, plugin.produces) == ("detector", ("upload",), "objects")
    assert plugin.model_version.startswith("detector-") and len(plugin.model_version) == 21


def test_objects_have_known_labels_scores_and_boxes_inside_the_image(harness: PluginHarness, scenes: list) -> None:
    bodies = harness.results([upload(scene.pixels, n) for n, scene in enumerate(scenes)])
    assert sum(len(body["objects"]) for body in bodies) >= len(scenes)
    for body in bodies:
        assert (body["width"], body["height"]) == (SCENE_SIDE, SCENE_SIDE)
        for found in body["objects"]:
            assert found["label"] in CLASS_LABELS and 0.3 <= found["score"] <= 1.0
            x0, y0, x1, y1 = found["box"]
            assert 0 <= x0 < x1 <= SCENE_SIDE and 0 <= y0 < y1 <= SCENE_SIDE


def test_boxes_are_in_the_uploads_own_pixels(harness: PluginHarness, scenes: list) -> None:
    scene = max(scenes, key=lambda s: len(s.labels))
    doubled = np.asarray(
        Image.fromarray(scene.pixels).resize((2 * SCENE_SIDE, 2 * SCENE_SIDE), Image.Resampling.BICUBIC)
    )
    (small, large) = harness.results([upload(scene.pixels, 0), upload(doubled, 1)])
    assert (large["width"], large["height"]) == (2 * SCENE_SIDE, 2 * SCENE_SIDE)
    small_boxes = torch.tensor([o["box"] for o in small["objects"]]).reshape(-1, 4) * 2
    large_boxes = torch.tensor([o["box"] for o in large["objects"]]).reshape(-1, 4)
    assert len(small_boxes) and len(large_boxes)
    assert iou_matrix(small_boxes, large_boxes).max(dim=1).values.min() > 0.7


def test_nms_drops_overlapping_boxes_of_one_label_only() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([1, 1, 2, 1])
    assert nms(boxes, scores, labels, 0.5).tolist() == [0, 2, 3]


def test_uploads_without_image_are_skipped_and_uris_refused(harness: PluginHarness) -> None:
    skipped, refused = harness.run([upload(None), upload(None, 1, uri="file:///tmp/x.png")])
    assert skipped.skipped and refused.failure is not None and "image_uri" in refused.failure.reason


def test_weights_dir_without_weights_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="weights_dir"):
        PluginHarness.load("detector", options={"weights_dir": str(tmp_path)})


def test_plugin_keeps_the_contract(scenes: list) -> None:
    events = [upload(scene.pixels, n) for n, scene in enumerate(scenes[:6])]
    report = check_contract(lambda: PluginHarness.load("detector"), events)
    assert report.results == len(events)


def test_a_large_upload_is_decoded_reduced_and_its_boxes_stay_in_its_own_pixels(
    harness: PluginHarness, scenes: list
) -> None:
    scene = max(scenes, key=lambda s: len(s.labels))
    side = 16 * SCENE_SIDE  # decoded reduced by 16 to the model's square
    large = np.asarray(Image.fromarray(scene.pixels).resize((side, side), Image.Resampling.BICUBIC))
    fitted = harness.plugin.prepare(upload(large), None)
    assert fitted is not None and (fitted.width, fitted.height, fitted.factor) == (side, side, 1 / 16)
    (small, big) = harness.results([upload(scene.pixels, 0), upload(large, 1)])
    assert (big["width"], big["height"]) == (side, side)
    small_boxes = torch.tensor([o["box"] for o in small["objects"]]).reshape(-1, 4) * 16
    big_boxes = torch.tensor([o["box"] for o in big["objects"]]).reshape(-1, 4)
    assert len(small_boxes) and len(big_boxes)
    assert iou_matrix(small_boxes, big_boxes).max(dim=1).values.min() > 0.7


def noise_upload(seed: int) -> UploadEvent:
    pixels = np.random.default_rng(seed).integers(0, 256, (SCENE_SIDE, SCENE_SIDE), dtype=np.uint8)
    return upload(pixels, seed)


def test_boxes_found_in_noise_are_rejected_with_the_taggers_reason() -> None:
    """Uniform noise is no clothing; the detector still fires on it at a low ``min_score``
    (79 boxes in 4 noise pictures), and the tagger's verdict rejects most of them (57)."""
    eager = PluginHarness.load("detector", options={"min_score": 0.1})  # so that noise yields boxes
    bodies = eager.results([noise_upload(seed) for seed in range(4)])
    found = [box for body in bodies for box in body["objects"]]
    rejected = [box for box in found if not box["in_distribution"]]
    print(f"{len(rejected)} of {len(found)} boxes in noise rejected")
    assert len(found) >= 8 and len(rejected) >= 2 / 3 * len(found)
    threshold = eager.plugin.options.rejection_threshold
    for box in rejected:
        assert box["in_distribution_score"] < threshold
        assert box["rejected_reason"].startswith("not like the clothing the tagger knows: in_distribution_score")


def test_a_clothing_item_on_a_plain_background_is_kept(harness: PluginHarness) -> None:
    """Ten Fashion-MNIST test items, 40 px on black: the best box of each is found and kept."""
    items = load_split("test")
    canvas = np.zeros((SCENE_SIDE, SCENE_SIDE), dtype=np.uint8)
    kept = 0
    for n in range(10):
        canvas[:] = 0
        canvas[28:68, 28:68] = np.asarray(Image.fromarray(items.images[n, 0].numpy()).resize((40, 40)))
        (body,) = harness.results([upload(canvas, n)])
        best = max(body["objects"], key=lambda box: box["score"])
        kept += best["in_distribution"] and "rejected_reason" not in best
    assert kept >= 9
