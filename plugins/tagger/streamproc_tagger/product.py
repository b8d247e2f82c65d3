"""Fashion-MNIST items rendered the way uploads look: product shots, not dataset tensors.

An upload is rarely a 28x28 white-on-black tensor: it is a dark object on a white
background, an RGB JPEG, off-centre on a larger canvas. ``render`` draws one
Fashion-MNIST item that way with explicit parameters (``ProductStyle``); the images
then go through the plugin's own decode and preprocessing (``outliers.preprocess_bytes``),
so training augmentation and evaluation see what production sees.

- ``random_style``: random styles for training augmentation (``train --product-augment``).
- ``EVALUATION_STYLES``: the fixed renderings on which the test accuracy is reported.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from streamproc_tagger.outliers import preprocess_bytes


@dataclass(frozen=True)
class ProductStyle:
    """How to draw one item: colours, object size, canvas and file format. A product shot has
    a light ``background`` and a dark ``ink``; the dataset's look is the reverse."""

    object_px: int
    """Side of the (square) object after enlarging, in pixels."""
    canvas_scale: float
    """Canvas side / object side (>= 1): 1 fills the frame, 2 leaves the object a quarter of it."""
    offset: tuple[float, float]
    """Where the object sits in the free space, (0, 0) top-left to (1, 1) bottom-right."""
    background: tuple[int, int, int]
    """RGB background colour."""
    ink: tuple[int, int, int]
    """RGB colour of the object's brightest (Fashion-MNIST 255) pixels."""
    jpeg_quality: int | None
    """JPEG quality, or ``None`` for PNG."""


EVALUATION_STYLES: dict[str, ProductStyle] = {
    "inverted": ProductStyle(28, 1.0, (0.5, 0.5), (255, 255, 255), (0, 0, 0), None),
    "rgb-jpeg-112px": ProductStyle(112, 1.0, (0.5, 0.5), (255, 255, 255), (0, 0, 0), 85),
    "off-centre-padded": ProductStyle(84, 1.9, (0.15, 0.8), (255, 255, 255), (0, 0, 0), 90),
    "coloured-jpeg-on-grey": ProductStyle(96, 1.4, (0.7, 0.3), (235, 235, 230), (40, 60, 120), 75),
}
"""The renderings of the test set on which product-style accuracy is reported."""


def random_style(rng: np.random.Generator) -> ProductStyle:
    """A random product-style rendering for training augmentation."""
    dark_on_white = bool(rng.random() < 0.7)
    level = int(rng.integers(200, 256))
    if dark_on_white:
        background = (level,) * 3
        ink = tuple(int(v) for v in rng.integers(0, 90, 3)) if rng.random() < 0.5 else (int(rng.integers(0, 60)),) * 3
    else:
        background = (int(rng.integers(0, 40)),) * 3
        ink = (level,) * 3
    return ProductStyle(
        object_px=int(rng.integers(28, 160)),
        canvas_scale=float(rng.uniform(1.0, 2.0)) if rng.random() < 0.6 else 1.0,
        offset=(float(rng.random()), float(rng.random())),
        background=background,
        ink=ink,
        jpeg_quality=int(rng.integers(50, 96)) if rng.random() < 0.7 else None,
    )


def render(item: np.ndarray, style: ProductStyle) -> bytes:
    """One Fashion-MNIST item (uint8 (28, 28), white on black) drawn in ``style``, encoded."""
    alpha = Image.fromarray(item).resize((style.object_px, style.object_px), Image.Resampling.BICUBIC)
    side = max(style.object_px, round(style.object_px * style.canvas_scale))
    free = side - style.object_px
    left, top = round(free * style.offset[0]), round(free * style.offset[1])
    weight = np.zeros((side, side), dtype=np.float32)
    weight[top : top + style.object_px, left : left + style.object_px] = np.asarray(alpha, dtype=np.float32) / 255.0
    background = np.asarray(style.background, dtype=np.float32)
    ink = np.asarray(style.ink, dtype=np.float32)
    pixels = background + weight[..., None] * (ink - background)
    image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    if style.jpeg_quality is None:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=style.jpeg_quality)
    return buffer.getvalue()


def render_set(images: torch.Tensor, style: ProductStyle | None, seed: int = 0) -> torch.Tensor:
    """Render uint8 images (N, 1, 28, 28) in ``style`` (``None``: a random style each, fixed
    by ``seed``) and preprocess them as the plugin does; returns uint8 (N, 1, 28, 28)."""
    rng = np.random.default_rng(seed)
    pixels = images[:, 0].numpy()
    encoded = [render(item, style if style is not None else random_style(rng)) for item in pixels]
    return preprocess_bytes(encoded)
