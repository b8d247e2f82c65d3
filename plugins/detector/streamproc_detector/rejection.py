"""Per-box open-set rejection, measured: real items kept, things that are not clothing rejected.

    python -m streamproc_detector.rejection [--scenes 150] [--patches 300] [--seed 0]

1. Operating point, on validation data only: the ``in_distribution_score`` of every
   detection matching a real item (IoU >= 0.5) in validation scenes (the tagger's
   validation items, never used to fit it, on ``train`` backgrounds), and of
   out-of-distribution crops of ``train`` photographs and noise (below); for each
   threshold of ``GRID`` the share of each rejected; the chosen threshold maximises the
   share of out-of-distribution crops rejected minus the share of real items rejected
   (Youden's J). The shipped ``rejection_threshold`` is that choice.
2. Held out (Fashion-MNIST TEST items on ``heldout`` backgrounds, through the plugin's
   public path at its shipped options): the share of detections matching a real item
   that are rejected, and of detections matching none; and, through the same verifier
   the plugin uses, the share rejected of out-of-distribution crops: patches of held-out
   photographs with no item in them, and uniform noise (sides 22-48 px, as items).
Proportions come with their sample sizes and 95% Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from streamproc_enhancer.data import Role
from streamproc_tagger.data import load_split, split_train_validation
from streamproc_tagger.metrics import wilson_ci

from streamproc.testing import PluginHarness
from streamproc_detector.boxes import iou_matrix
from streamproc_detector.evaluate import upload
from streamproc_detector.openset import BoxVerifier, crop_box
from streamproc_detector.scenes import ITEM_SIDES, Scene, SceneMaker, backgrounds

GRID = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05)
MATCH_IOU = 0.5


def share(flags: Sequence[bool]) -> dict[str, Any]:
    hits = int(sum(flags))
    low, high = wilson_ci(hits, len(flags))
    return {"n": len(flags), "rejected": round(hits / max(1, len(flags)), 4), "ci95": [round(low, 4), round(high, 4)]}


def detected(harness: PluginHarness, scenes: Sequence[Scene]) -> tuple[list[dict], list[dict]]:
    """The objects the plugin reports, split into (matching a real item, matching none)."""
    bodies = harness.results([upload(scene, n) for n, scene in enumerate(scenes)])
    real, false = [], []
    for body, scene in zip(bodies, scenes, strict=True):
        if not body["objects"]:
            continue
        boxes = torch.tensor([found["box"] for found in body["objects"]], dtype=torch.float32)
        best = (
            iou_matrix(boxes, torch.from_numpy(scene.boxes)).amax(dim=1)
            if len(scene.boxes)
            else torch.zeros(len(boxes))
        )
        for found, iou in zip(body["objects"], best.tolist(), strict=True):
            (real if iou >= MATCH_IOU else false).append(found)
    return real, false


def out_of_distribution_crops(count: int, seed: int, role: Role = "heldout") -> dict[str, list[Image.Image]]:
    """``count`` patches of ``role`` photographs (no item) and ``count`` uniform-noise patches."""
    rng = np.random.default_rng(seed)
    photos = backgrounds(role)
    patches, noise = [], []
    for n in range(count):
        side = int(rng.integers(ITEM_SIDES[0], ITEM_SIDES[1] + 1))
        photo = photos[n % len(photos)]
        x, y = int(rng.integers(0, photo.shape[1] - side)), int(rng.integers(0, photo.shape[0] - side))
        patches.append(crop_box(photo, [x, y, x + side, y + side], margin=0.0))
        noise.append(Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), mode="L"))
    return {"photo_patches": patches, "noise_patches": noise}


def ood_scores(verifier: BoxVerifier, count: int, seed: int, role: Role) -> dict[str, np.ndarray]:
    """Scores of ``out_of_distribution_crops`` (blank crops score 0, as the tagger's)."""
    crops = out_of_distribution_crops(count, seed, role)
    return {
        name: np.array([v.in_distribution_score for v in verifier.verdicts(items)]) for name, items in crops.items()
    }


def operating_point(scenes: int, patches: int, seed: int, verifier: BoxVerifier) -> dict[str, Any]:
    """Section 1 of the module docstring: the curve on validation data and the chosen threshold."""
    _, validation_items = split_train_validation(load_split("train"))
    maker = SceneMaker(validation_items, backgrounds("train"))
    rng = np.random.default_rng([seed, 1])
    open_harness = PluginHarness.load("detector", options={"rejection_threshold": 0.0})
    real, _ = detected(open_harness, [maker.scene(rng) for _ in range(scenes)])
    real_scores = np.array([found["in_distribution_score"] for found in real])
    ood = np.concatenate(list(ood_scores(verifier, patches, seed + 1, "train").values()))
    curve = [
        {
            "threshold": t,
            "real_rejected": round(float(np.mean(real_scores < t)), 4),
            "ood_rejected": round(float(np.mean(ood < t)), 4),
        }
        for t in GRID
    ]
    best = max(curve, key=lambda point: point["ood_rejected"] - point["real_rejected"])
    return {"real_detections": len(real_scores), "ood_crops": len(ood), "curve": curve, "chosen": best["threshold"]}


def rejection_report(scenes: int, patches: int, seed: int) -> dict[str, Any]:
    """The figures of the module docstring."""
    verifier = BoxVerifier()
    report: dict[str, Any] = {"validation": operating_point(scenes, patches, seed, verifier)}
    harness = PluginHarness.load("detector")
    threshold = harness.plugin.options.rejection_threshold
    rng = np.random.default_rng([seed, 2])
    heldout = SceneMaker.for_role("test", "heldout")
    real, false = detected(harness, [heldout.scene(rng) for _ in range(scenes)])
    report["shipped_rejection_threshold"] = threshold
    report["heldout_real_detections"] = share([not found["in_distribution"] for found in real])
    report["heldout_false_detections"] = share([not found["in_distribution"] for found in false])
    for name, scores in ood_scores(verifier, patches, seed, "heldout").items():
        report[f"heldout_{name}"] = share(list(scores < threshold))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=150)
    parser.add_argument("--patches", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(rejection_report(args.scenes, args.patches, args.seed), indent=2))


if __name__ == "__main__":
    main()
