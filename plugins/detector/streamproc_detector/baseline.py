"""The baseline the detector must beat: connected components + the tagger.

Foreground is where a pixel departs from the scene's background level (the median of
the outer pixel ring) by more than Otsu's threshold on that departure; after a 3x3
opening, every 8-connected component of at least ``MIN_AREA`` pixels is a box, and the
tagger labels its crop (score = the tagger's top probability).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from streamproc_tagger.model import TaggerNet
from streamproc_tagger.preprocess import border_level, to_fashion_mnist

MIN_AREA = 40


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of uint8-range values (maximises the between-class variance)."""
    histogram = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    weights = np.cumsum(histogram)
    means = np.cumsum(histogram * np.arange(256))
    total, total_mean = weights[-1], means[-1]
    between = (total_mean * weights - means * total) ** 2 / np.maximum(weights * (total - weights), 1e-9)
    return float(np.argmax(between[:-1]))


def component_boxes(pixels: np.ndarray) -> np.ndarray:
    """Boxes (K, 4) [x0, y0, x1, y1) of the foreground components of a uint8 luma scene."""
    departure = np.abs(pixels.astype(np.float32) - border_level(pixels))
    mask = ndimage.binary_opening(departure > otsu_threshold(departure), structure=np.ones((3, 3)))
    labelled, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labelled), start=1):
        if region is None or int((labelled[region] == index).sum()) < MIN_AREA:
            continue
        rows, cols = region
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
    return np.array(boxes, np.float32).reshape(-1, 4)


def detect(pixels: np.ndarray, tagger: TaggerNet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, scores, labels) of the components, each labelled by the tagger."""
    boxes = component_boxes(pixels)
    if not len(boxes):
        return boxes, np.zeros(0, np.float32), np.zeros(0, np.int64)
    crops = [
        to_fashion_mnist(Image.fromarray(pixels[int(y0) : int(y1), int(x0) : int(x1)])) for x0, y0, x1, y1 in boxes
    ]
    batch = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0).unsqueeze(1)
    with torch.inference_mode():
        probabilities = tagger.probabilities(batch).float()
    scores, labels = probabilities.max(dim=1)
    return boxes, scores.numpy(), labels.numpy()
