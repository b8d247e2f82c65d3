"""Colour handling around the luma model, and the classic resampling baselines.

The network restores luma (Y of PIL's full-range YCbCr, ITU-R 601 weights); colour
comes from bicubic upscaling (the eye is far less sensitive to chroma detail, as in
ESPCN/FSRCNN): the bicubic RGB image is shifted, per pixel and equally in R, G and B,
by the luma correction, so the output's luma is the restored one without a lossy
YCbCr -> RGB round trip. Grayscale images stay grayscale.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image

Baseline = Literal["bicubic", "lanczos"]
RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luma(image: Image.Image) -> np.ndarray:
    """uint8 (H, W) luma of an ``L`` or ``RGB`` image."""
    if image.mode == "L":
        return np.asarray(image)
    return np.asarray(image.convert("YCbCr"))[:, :, 0]


def luma_tensor(image: Image.Image) -> torch.Tensor:
    """float32 (1, H, W) luma in [0, 1]."""
    return torch.from_numpy(luma(image).astype(np.float32) / 255.0).unsqueeze(0)


def compose(image: Image.Image, restored_luma: torch.Tensor, scale: int) -> Image.Image:
    """The upscaled image: restored luma (1, H*s, W*s) in [0, 1]; for RGB, the bicubic
    upscaling shifted by (restored luma - its luma) in every channel, then corrected once
    by whole levels so the output's luma (as ``luma`` reads it) is the rounded restored
    luma wherever no channel clips. ``L`` in, ``L`` out."""
    y = restored_luma.float().clamp(0, 1).squeeze(0).cpu().numpy() * 255.0
    target = np.rint(y)
    if image.mode == "L":
        return Image.fromarray(target.astype(np.uint8), mode="L")
    rgb = np.asarray(upscale_baseline(image, scale, "bicubic"), dtype=np.float32)
    shifted = np.clip(np.rint(rgb + (y - rgb @ LUMA_WEIGHTS)[:, :, None]), 0, 255)
    residual = target - luma(Image.fromarray(shifted.astype(np.uint8), mode="RGB"))
    corrected = np.clip(shifted + residual[:, :, None], 0, 255)  # the weights sum to one
    return Image.fromarray(corrected.astype(np.uint8), mode="RGB")


def upscale_baseline(image: Image.Image, scale: int, method: Baseline) -> Image.Image:
    """``image`` resized by ``scale`` with a classic filter (what the model must beat)."""
    return image.resize((image.width * scale, image.height * scale), RESAMPLING[method])
