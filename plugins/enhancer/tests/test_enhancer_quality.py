"""Quality gate: the shipped enhancer against bicubic and Lanczos on sources training
never opened, through the plugin's public path (a small subset: 18 crops of 9 images;
the model card has the full run, 124 crops of 31 images: on clean thumbnails +2.16 dB
over bicubic at x2 [1.44, 3.00] and +1.53 dB at x4 [1.03, 2.14], higher SSIM than
bicubic and Lanczos at both scales).
"""

from __future__ import annotations

import pytest
import torch
from streamproc_enhancer.data import SOURCES, MissingSource, source_files
from streamproc_enhancer.evaluate import quality_report

HELD_OUT = [package for package, role in SOURCES.items() if role == "heldout"]
MIN_GAIN_DB = {2: 1.0, 4: 1.0}


def _installed() -> bool:
    try:
        return all(source_files(package) for package in HELD_OUT)
    except MissingSource:
        return False


@pytest.mark.quality
@pytest.mark.skipif(not _installed(), reason=f"held-out wallpaper packages missing: {HELD_OUT}")
def test_enhancer_restores_clean_thumbnails_of_unseen_sources_better_than_bicubic_and_lanczos() -> None:
    torch.set_num_threads(1)
    report = quality_report(None, crops_per_image=2, seed=1, images_per_source=3)
    for scale, min_gain_db in MIN_GAIN_DB.items():
        figures = report[f"x{scale}_clean"]
        print(scale, figures["psnr_gain_over_bicubic"], figures["crops_better_than_bicubic"], figures["enhancer"])
        psnr = {method: figures[method]["psnr"]["mean"] for method in ("enhancer", "bicubic", "lanczos")}
        ssim = {method: figures[method]["ssim"]["mean"] for method in ("enhancer", "bicubic", "lanczos")}
        assert figures["psnr_gain_over_bicubic"]["ci95"][0] > 0
        assert figures["psnr_gain_over_bicubic"]["mean"] >= min_gain_db
        assert psnr["enhancer"] > psnr["lanczos"]
        assert ssim["enhancer"] > max(ssim["bicubic"], ssim["lanczos"])
