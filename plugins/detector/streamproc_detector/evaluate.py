"""Held-out detection quality through the plugin's public path, against the baseline.

    python -m streamproc_detector.evaluate [--scenes 1000] [--seed 0] [--write-card]

Scenes are composed from the Fashion-MNIST TEST split on the ``heldout`` backgrounds
(sources training never opened). Each scene travels as a PNG upload through
``PluginHarness`` (prepare, batched infer, result) with ``min_score`` 0.01 so the whole
precision-recall curve is measured; the baseline (connected components + the tagger)
sees the same pixels. Reported: mAP@0.5 and mAP@0.5:0.95 (COCO, 101 recall points) with
95% bootstrap intervals over scenes, and the paired difference to the baseline.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from streamproc_tagger.data import CLASS_LABELS
from streamproc_tagger.model import TaggerNet, load_tagger

from streamproc.config import PluginSettings
from streamproc.events import UploadEvent
from streamproc.testing import PluginHarness
from streamproc_detector import baseline
from streamproc_detector.metrics import COCO_THRESHOLDS, ImageDetections, MatchTable
from streamproc_detector.model import NUM_CLASSES, shipped_weights_dir
from streamproc_detector.plugin import DetectorPlugin
from streamproc_detector.scenes import Scene, SceneMaker

EVAL_MIN_SCORE = 0.01
LABEL_INDEX = {label: index for index, label in enumerate(CLASS_LABELS)}


def heldout_scenes(count: int, seed: int, per_source: int | None = None) -> list[Scene]:
    """``count`` scenes of TEST items on held-out backgrounds (the first ``per_source``
    of each held-out source when given), fixed by ``seed``."""
    maker = SceneMaker.for_role("test", "heldout", per_source)
    rng = np.random.default_rng(seed)
    return [maker.scene(rng) for _ in range(count)]


def upload(scene: Scene, n: int) -> UploadEvent:
    buffer = io.BytesIO()
    Image.fromarray(scene.pixels).save(buffer, format="PNG")
    return UploadEvent(
        id=f"eval-{n}", type="upload", ts=1_700_000_000_000, user_id="eval", upload_id=f"u-{n}", image=buffer.getvalue()
    )


def plugin_detections(harness: PluginHarness, scenes: Sequence[Scene]) -> list[ImageDetections]:
    bodies = harness.results([upload(scene, n) for n, scene in enumerate(scenes)])
    out = []
    for body, scene in zip(bodies, scenes, strict=True):
        if body is None:
            raise AssertionError("the detector skipped a scene")
        objects = body["objects"]
        out.append(
            ImageDetections(
                np.array([o["box"] for o in objects], np.float32).reshape(-1, 4),
                np.array([o["score"] for o in objects], np.float32),
                np.array([LABEL_INDEX[o["label"]] for o in objects], np.int64),
                scene.boxes,
                scene.labels,
            )
        )
    return out


def baseline_detections(tagger: TaggerNet, scenes: Sequence[Scene]) -> list[ImageDetections]:
    out = []
    for scene in scenes:
        boxes, scores, labels = baseline.detect(scene.pixels, tagger)
        out.append(ImageDetections(boxes, scores, labels, scene.boxes, scene.labels))
    return out


def maps(table: MatchTable, weights: np.ndarray | None = None) -> dict[str, float]:
    return {
        "map50": table.mean_average_precision((0.5,), weights),
        "map50_95": table.mean_average_precision(COCO_THRESHOLDS, weights),
    }


def bootstrap(
    model: Sequence[ImageDetections], base: Sequence[ImageDetections], resamples: int, seed: int
) -> dict[str, Any]:
    """Point figures and 95% percentile intervals (scenes resampled with replacement, the
    same resample for both methods so the difference is paired)."""
    tables = {
        "detector": MatchTable(model, COCO_THRESHOLDS, NUM_CLASSES),
        "baseline": MatchTable(base, COCO_THRESHOLDS, NUM_CLASSES),
    }
    points = {method: maps(table) for method, table in tables.items()}
    points["difference"] = {key: points["detector"][key] - points["baseline"][key] for key in points["detector"]}
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[float]]] = {method: {key: [] for key in points["detector"]} for method in points}
    for _ in range(resamples):
        weights = np.bincount(rng.integers(0, len(model), len(model)), minlength=len(model))
        sample = {method: maps(table, weights) for method, table in tables.items()}
        for key in points["detector"]:
            draws["detector"][key].append(sample["detector"][key])
            draws["baseline"][key].append(sample["baseline"][key])
            draws["difference"][key].append(sample["detector"][key] - sample["baseline"][key])
    return {
        method: {
            key: {
                "value": round(value, 4),
                "ci95": [round(float(np.percentile(draws[method][key], q)), 4) for q in (2.5, 97.5)],
            }
            for key, value in figures.items()
        }
        for method, figures in points.items()
    }


def quality_report(
    weights_dir: Path | None, scenes: int, seed: int, resamples: int = 200, per_source: int | None = None
) -> dict[str, Any]:
    """Detector vs baseline on ``scenes`` held-out compositions (see the module docstring)."""
    held_out = heldout_scenes(scenes, seed, per_source)
    options: dict[str, Any] = {"min_score": EVAL_MIN_SCORE}
    if weights_dir:
        options["weights_dir"] = str(weights_dir)
    harness = PluginHarness.of(DetectorPlugin(), PluginSettings(options=options))
    model = plugin_detections(harness, held_out)
    base = baseline_detections(load_tagger("cpu"), held_out)
    report = {
        "model_version": harness.plugin.model_version,
        "scenes": len(held_out),
        "objects": int(sum(len(scene.labels) for scene in held_out)),
        "items": "Fashion-MNIST TEST split",
        "backgrounds": "held-out sources only",
        "baseline_method": "connected components (Otsu on departure from the border level, 3x3 opening) + the tagger",
        "bootstrap_resamples": resamples,
    }
    report.update(bootstrap(model, base, resamples, seed))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-card", action="store_true", help="record the figures in the model card")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    report = quality_report(args.weights_dir, args.scenes, args.seed, args.resamples)
    report["command"] = f"python -m streamproc_detector.evaluate --scenes {args.scenes} --seed {args.seed}"
    print(json.dumps(report, indent=2))
    if args.write_card:
        card_path = (args.weights_dir or shipped_weights_dir()) / "model_card.json"
        card = json.loads(card_path.read_text())
        card["evaluation"] = report
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
