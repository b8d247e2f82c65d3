"""Composed scenes: several Fashion-MNIST items on a photographic background, boxes known.

A scene is ``SCENE_SIDE`` x ``SCENE_SIDE`` luma. Its background is a random crop of a
wallpaper photograph (the enhancer's sources: ``train`` backgrounds for training,
``heldout`` ones, never seen in training, for evaluation), rescaled and with its
contrast lowered at random. One to ``MAX_ITEMS`` items are pasted on it: each is
resized to ``ITEM_SIDES`` pixels, drawn with a random brightness range (a fifth of them
dark on the background), and blended through a mask made from its own pixels. Items may
overlap: a new item may cover at most ``MAX_COVER`` of an earlier item's box, so every
item stays visible. A box is the tight extent of the item's visible-at-rest pixels
(amodal: the full item even where a later one covers it), in pixels, [x0, y0, x1, y1)
(x1, y1 exclusive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from streamproc_enhancer.data import Role, photos
from streamproc_tagger.data import ImageSet, load_split

SCENE_SIDE = 96
MAX_ITEMS = 4
ITEM_SIDES = (22, 48)
MAX_COVER = 0.5
BACKGROUND_SIDE = 384
"""Backgrounds are kept as luma with this longer side (crops are taken from them)."""


@dataclass(frozen=True)
class Scene:
    """uint8 luma (SCENE_SIDE, SCENE_SIDE), boxes float32 (K, 4) [x0, y0, x1, y1), labels int64 (K,)."""

    pixels: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def backgrounds(role: Role, per_source: int | None = None) -> list[np.ndarray]:
    """The luma backgrounds of the photographs with ``role`` (longer side ``BACKGROUND_SIDE``;
    the first ``per_source`` of each source when given)."""
    out = []
    for photo in photos(role, per_source):
        gray = photo.image.convert("L")
        factor = BACKGROUND_SIDE / max(gray.size)
        gray = gray.resize((round(gray.width * factor), round(gray.height * factor)), Image.Resampling.LANCZOS)
        out.append(np.asarray(gray))
    return out


def intersection(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return float(max(0.0, width) * max(0.0, height))


class SceneMaker:
    """Draws scenes from one item split and one set of backgrounds, reproducibly by seed."""

    def __init__(self, items: ImageSet, backgrounds: list[np.ndarray]) -> None:
        if not backgrounds:
            raise ValueError("no backgrounds")
        self.items = items.images[:, 0].numpy()
        self.labels = items.labels.numpy()
        self.backgrounds = backgrounds

    @classmethod
    def for_role(cls, split: str, role: Role, per_source: int | None = None) -> SceneMaker:
        """Items of the Fashion-MNIST ``split`` ("train" | "test") on ``role`` backgrounds."""
        return cls(load_split(split), backgrounds(role, per_source))

    def background(self, rng: np.random.Generator) -> np.ndarray:
        source = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        side = int(rng.integers(SCENE_SIDE, min(source.shape) + 1))
        top = int(rng.integers(0, source.shape[0] - side + 1))
        left = int(rng.integers(0, source.shape[1] - side + 1))
        crop = Image.fromarray(source[top : top + side, left : left + side])
        pixels = np.asarray(crop.resize((SCENE_SIDE, SCENE_SIDE), Image.Resampling.BILINEAR), dtype=np.float32)
        contrast = float(rng.uniform(0.3, 1.0))
        return pixels.mean() + (pixels - pixels.mean()) * contrast

    def scene(self, rng: np.random.Generator) -> Scene:
        """One scene with 1..MAX_ITEMS items (see the module docstring)."""
        canvas = self.background(rng)
        boxes: list[np.ndarray] = []
        labels: list[int] = []
        for _ in range(int(rng.integers(1, MAX_ITEMS + 1))):
            index = int(rng.integers(len(self.items)))
            side = int(rng.integers(ITEM_SIDES[0], ITEM_SIDES[1] + 1))
            item = np.asarray(Image.fromarray(self.items[index]).resize((side, side), Image.Resampling.BILINEAR))
            rows = np.flatnonzero((item > 16).any(axis=1))
            cols = np.flatnonzero((item > 16).any(axis=0))
            if not rows.size:
                continue
            for _attempt in range(20):
                left = int(rng.integers(0, SCENE_SIDE - side + 1))
                top = int(rng.integers(0, SCENE_SIDE - side + 1))
                box = np.array([left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1], np.float32)
                area = (box[2] - box[0]) * (box[3] - box[1])
                if all(
                    intersection(box, old) <= MAX_COVER * (old[2] - old[0]) * (old[3] - old[1])
                    and intersection(box, old) <= MAX_COVER * area
                    for old in boxes
                ):
                    break
            else:
                continue
            low, high = float(rng.uniform(0, 90)), float(rng.uniform(170, 255))
            if rng.random() < 0.2:
                low, high = high, low
            shade = low + (high - low) * item.astype(np.float32) / 255.0
            alpha = np.clip(item.astype(np.float32) / 255.0 * 4.0, 0.0, 1.0)
            region = canvas[top : top + side, left : left + side]
            canvas[top : top + side, left : left + side] = region * (1 - alpha) + shade * alpha
            boxes.append(box)
            labels.append(int(self.labels[index]))
        pixels = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        return Scene(pixels, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64))
