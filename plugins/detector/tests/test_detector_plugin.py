"""The detector plugin, discovered through its entry point: boxes, labels, scores, refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from streamproc_detector.boxes import iou_matrix, nms
from streamproc_detector.scenes import SCENE_SIDE, SceneMaker
from streamproc_tagger.data import CLASS_LABELS, DATA_DIR

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
