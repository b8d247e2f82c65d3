"""Held-out evaluation through the plugin's public path, next to bicubic and Lanczos.

    python -m streamproc_enhancer.evaluate [--crops-per-image 4] [--seed 0] [--write-card]

Cases come only from the ``heldout`` sources (whole Debian packages training never
opened): ``crops_per_image`` random 128x128 crops of each reference. Each crop is
degraded per scale (x2 -> 64x64, x4 -> 32x32 thumbnails) under two conditions:
``clean`` (bicubic only) and ``jpeg`` (bicubic, then JPEG at a seeded quality 60-90).
The thumbnail travels as a PNG upload event through ``PluginHarness`` (prepare, batched
infer, result) and the result's PNG is compared with the reference; the baselines
resize the same thumbnail with PIL. PSNR and SSIM on luma, border of ``scale`` pixels
skipped; means with 95% intervals from a bootstrap over source images (crops of one
image are not independent), and the paired PSNR gain over bicubic with its interval.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from streamproc.config import PluginSettings
from streamproc.events import UploadEvent
from streamproc.testing import PluginHarness
from streamproc_enhancer.data import Degradation, degrade, photos, random_crop
from streamproc_enhancer.imaging import luma, upscale_baseline
from streamproc_enhancer.metrics import cluster_bootstrap_ci, psnr, ssim
from streamproc_enhancer.model import SCALES, shipped_weights_dir
from streamproc_enhancer.plugin import EnhancerPlugin

CROP_SIDE = 128
CONDITIONS = ("clean", "jpeg")
BASELINES = ("bicubic", "lanczos")


@dataclass(frozen=True)
class Case:
    """One held-out reference crop and where it came from (``image`` names the cluster)."""

    source: str
    image: str
    reference: Image.Image


def heldout_cases(crops_per_image: int, seed: int, images_per_source: int | None = None) -> list[Case]:
    """Crops of the held-out sources' references (the first ``images_per_source`` files
    of each source when given)."""
    rng = np.random.default_rng(seed)
    return [
        Case(photo.source, f"{photo.source}/{photo.path.name}", random_crop(photo.image, CROP_SIDE, rng))
        for photo in photos("heldout", images_per_source)
        for _ in range(crops_per_image)
    ]


def thumbnail(case: Case, scale: int, condition: str, rng: np.random.Generator) -> Image.Image:
    """The case's thumbnail at ``scale`` under ``condition`` (see the module docstring)."""
    quality = int(rng.integers(60, 91)) if condition == "jpeg" else None
    return degrade(case.reference, Degradation(scale, jpeg_quality=quality), rng)


def upload(image: Image.Image, n: int) -> UploadEvent:
    """A PNG upload event carrying ``image``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return UploadEvent(
        id=f"eval-{n}", type="upload", ts=1_700_000_000_000, user_id="eval", upload_id=f"u-{n}", image=buffer.getvalue()
    )


def enhance(harness: PluginHarness, thumbnails: Sequence[Image.Image]) -> list[Image.Image]:
    """The plugin's output image for each thumbnail, through prepare/infer/result."""
    bodies = harness.results([upload(image, n) for n, image in enumerate(thumbnails)])
    outputs = []
    for body in bodies:
        if body is None:
            raise AssertionError("the enhancer skipped a thumbnail")
        outputs.append(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"))
    return outputs


def summary(values: list[float], clusters: list[str], seed: int) -> dict[str, Any]:
    low, high = cluster_bootstrap_ci(values, clusters, seed=seed)
    return {"mean": round(float(np.mean(values)), 4), "ci95": [round(low, 4), round(high, 4)]}


def measure(harness: PluginHarness, cases: Sequence[Case], scale: int, condition: str, seed: int) -> dict[str, Any]:
    """PSNR/SSIM of the enhancer and the baselines on ``cases`` at ``scale`` under ``condition``."""
    rng = np.random.default_rng([seed, scale, CONDITIONS.index(condition)])
    thumbnails = [thumbnail(case, scale, condition, rng) for case in cases]
    outputs = {"enhancer": enhance(harness, thumbnails)}
    for method in BASELINES:
        outputs[method] = [upscale_baseline(image, scale, method) for image in thumbnails]
    references = [luma(case.reference) for case in cases]
    clusters = [case.image for case in cases]
    scores: dict[str, dict[str, list[float]]] = {}
    for method, images in outputs.items():
        estimates = [luma(image) for image in images]
        scores[method] = {
            "psnr": [psnr(r, e, border=scale) for r, e in zip(references, estimates, strict=True)],
            "ssim": [ssim(r, e, border=scale) for r, e in zip(references, estimates, strict=True)],
        }
    report: dict[str, Any] = {"crops": len(cases), "images": len(set(clusters))}
    for method, metric in scores.items():
        report[method] = {name: summary(values, clusters, seed) for name, values in metric.items()}
    gain = [e - b for e, b in zip(scores["enhancer"]["psnr"], scores["bicubic"]["psnr"], strict=True)]
    report["psnr_gain_over_bicubic"] = summary(gain, clusters, seed)
    report["crops_better_than_bicubic"] = round(float(np.mean([g > 0 for g in gain])), 4)
    return report


def quality_report(
    weights_dir: Path | None, crops_per_image: int, seed: int, images_per_source: int | None = None
) -> dict[str, Any]:
    """Figures per scale and condition on the held-out sources (see the module docstring)."""
    cases = heldout_cases(crops_per_image, seed, images_per_source)
    options = {"weights_dir": str(weights_dir)} if weights_dir else {}
    report: dict[str, Any] = {
        "sources": sorted({case.source for case in cases}),
        "crop": f"{CROP_SIDE}x{CROP_SIDE} reference, luma PSNR/SSIM, border of `scale` px skipped",
    }
    for scale in SCALES:
        harness = PluginHarness.of(EnhancerPlugin(), PluginSettings(options={**options, "scale": scale}))
        report["model_version"] = harness.plugin.model_version
        for condition in CONDITIONS:
            report[f"x{scale}_{condition}"] = measure(harness, cases, scale, condition, seed)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--crops-per-image", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-card", action="store_true", help="record the figures in the model card")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    report = quality_report(args.weights_dir, args.crops_per_image, args.seed)
    report["command"] = (
        f"python -m streamproc_enhancer.evaluate --crops-per-image {args.crops_per_image} --seed {args.seed}"
    )
    print(json.dumps(report, indent=2))
    if args.write_card:
        card_path = (args.weights_dir or shipped_weights_dir()) / "model_card.json"
        card = json.loads(card_path.read_text())
        card["evaluation"] = report
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
