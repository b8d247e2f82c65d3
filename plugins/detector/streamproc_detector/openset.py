"""Open-set rejection per box: the tagger's verdict on each detected item.

The detector always names one of the ten Fashion-MNIST classes; whether the thing in a
box is clothing at all is the tagger's open-set question (``streamproc_tagger.openset``).
Each box is cut from the fitted luma image (model pixels), tight (``CROP_MARGIN`` 0: a
margin of 0.15 of the box per side rejected more real items at every threshold on
validation scenes), turned into a Fashion-MNIST-like
28x28 input by the tagger's own preprocessing (``to_fashion_mnist``), and scored by the
shipped tagger network and its fitted ``OpenSetDetector``: the ``in_distribution_score``
is a conformal p-value against real clothing items (about a fraction ``t`` of real items
score below ``t``); a blank crop scores 0. The plugin rejects a box below its
``rejection_threshold``, as the tagger rejects a whole image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from streamproc_tagger.model import TaggerNet, load_tagger, shipped_weights_dir
from streamproc_tagger.openset import BLANK_LEVEL, ModelOutputs, OpenSetDetector, load_detector
from streamproc_tagger.preprocess import to_fashion_mnist

CROP_MARGIN = 0.0
"""Margin added on each side of a box before it is scored, as a fraction of its width/height."""


@dataclass(frozen=True)
class BoxVerdict:
    """The tagger's open-set verdict on one box: its score in [0, 1] and whether the crop is blank."""

    in_distribution_score: float
    blank: bool


def crop_box(pixels: np.ndarray, box: Sequence[float], margin: float = CROP_MARGIN) -> Image.Image:
    """The ``L`` crop of uint8 luma ``pixels`` (H, W) around ``box`` [x0, y0, x1, y1) in its
    pixels, widened by ``margin`` of the box's size per side, clipped to the image, at least 1 px."""
    height, width = pixels.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    left, top = max(0, int(np.floor(x0 - dx))), max(0, int(np.floor(y0 - dy)))
    right = min(width, max(left + 1, int(np.ceil(x1 + dx))))
    bottom = min(height, max(top + 1, int(np.ceil(y1 + dy))))
    return Image.fromarray(np.ascontiguousarray(pixels[top:bottom, left:right]), mode="L")


class BoxVerifier:
    """The shipped tagger and its open-set detector, scoring crops of detected boxes."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        """Load both on ``device``; ``FileNotFoundError`` when the tagger's files are missing."""
        folder = shipped_weights_dir()
        self.model: TaggerNet = load_tagger(device, folder)
        self.detector: OpenSetDetector = load_detector(folder)
        self.device = torch.device(device)

    @property
    def model_version(self) -> str:
        return self.model.model_version

    @torch.no_grad()
    def verdicts(self, crops: Sequence[Image.Image]) -> list[BoxVerdict]:
        """One forward pass of the tagger over every crop; a verdict per crop, in order."""
        if not crops:
            return []
        inputs = torch.stack(
            [torch.from_numpy(to_fashion_mnist(crop).astype(np.float32) / 255.0).unsqueeze(0) for crop in crops]
        )
        features = self.model.features(inputs.to(self.device))
        outputs = ModelOutputs(
            logits=self.model.head(features).float().cpu(),
            features=features.float().cpu(),
            blank=inputs.flatten(1).amax(1) <= BLANK_LEVEL,
        )
        scores = self.detector.in_distribution_score(outputs)
        return [BoxVerdict(float(s), bool(b)) for s, b in zip(scores.tolist(), outputs.blank.tolist(), strict=True)]
