"""Turning an arbitrary uploaded image into a Fashion-MNIST-like 28x28 input.

Fashion-MNIST products were trimmed, their longest edge resized to 28 pixels, centred
and negated: a white object on a pure black background, filling the frame. Uploaded
images are mapped to the same look, deterministically:

1. decode (``streamproc.media.decode_image``: PNG/JPEG, any mode, bomb-guarded, reduced
   while decoding to no less than ``DECODE_SIZE``) and convert to 8-bit luma (ITU-R 601-2);
2. the background level is the median of the outermost pixel ring; when it is bright
   (> 127, a product shot on white) the image is inverted so the object is bright;
3. the background is shifted to 0 and the contrast stretched so the brightest pixel
   is 255;
4. the image is trimmed to the bounding box of pixels brighter than
   ``TRIM_THRESHOLD`` (kept whole when none is), letterboxed to a square with black,
   and resized to 28x28 with Lanczos (antialiased) resampling.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from streamproc.media import decode_image

SIZE = 28
TRIM_THRESHOLD = 32
DECODE_SIZE = (4 * SIZE, 4 * SIZE)
"""The least the tagger decodes: larger images are reduced while decoding (a product that
fills a quarter of the frame still has more than 28 pixels a side after trimming)."""


def border_level(gray: np.ndarray) -> float:
    """Median of the outermost ring of pixels of a 2-D uint8 array."""
    ring = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    return float(np.median(ring))


def to_fashion_mnist(image: Image.Image) -> np.ndarray:
    """A decoded L/RGB image -> uint8 array (28, 28), white object on black."""
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    background = border_level(gray)
    if background > 127:
        gray, background = 255.0 - gray, 255.0 - background
    peak = float(gray.max())
    if peak > background:
        gray = np.clip((gray - background) * (255.0 / (peak - background)), 0.0, 255.0)
    else:
        gray = np.zeros_like(gray)
    rows = np.flatnonzero((gray > TRIM_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((gray > TRIM_THRESHOLD).any(axis=0))
    if rows.size and cols.size:
        gray = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = gray.shape
    side = max(height, width)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = gray
    small = Image.fromarray(np.round(square).astype(np.uint8)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


def image_tensor(data: bytes) -> torch.Tensor:
    """PNG/JPEG bytes -> float32 tensor (1, 28, 28) in [0, 1] for ``TaggerNet``.

    Raises ``MediaError`` (from ``decode_image``) when the bytes are not a decodable,
    reasonably sized PNG or JPEG. Images are decoded reduced to ``DECODE_SIZE``.
    """
    pixels = to_fashion_mnist(decode_image(data, needed_size=DECODE_SIZE))
    return torch.from_numpy(pixels.astype(np.float32) / 255.0).unsqueeze(0)
