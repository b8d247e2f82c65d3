"""Training images for the GAN and the categories a request may name.

Images are Fashion-MNIST's, loaded through ``streamproc_tagger.data`` (one loader for
both plugins), scaled to [-1, 1] for the generator's tanh output. A request names a
category by its label (``"sneaker"``), its display name (``"Ankle boot"``) or an
obvious alias (``"sneakers"``, ``"t-shirt"``, ``"jacket"``), case-insensitively.
"""

from __future__ import annotations

import re

import torch
from streamproc_tagger.data import CLASS_LABELS, CLASS_NAMES, load_split

from streamproc.errors import InvalidInput

ALIASES = {
    "tshirt": "t-shirt",
    "tee": "t-shirt",
    "top": "t-shirt",
    "t-shirt-top": "t-shirt",
    "trousers": "trouser",
    "pants": "trouser",
    "jeans": "trouser",
    "sweater": "pullover",
    "jumper": "pullover",
    "pullovers": "pullover",
    "dresses": "dress",
    "coats": "coat",
    "jacket": "coat",
    "sandals": "sandal",
    "shirts": "shirt",
    "sneakers": "sneaker",
    "trainer": "sneaker",
    "trainers": "sneaker",
    "bags": "bag",
    "handbag": "bag",
    "ankle-boots": "ankle-boot",
    "boot": "ankle-boot",
    "boots": "ankle-boot",
}


def _normalise(name: str) -> str:
    return re.sub(r"[\s_/]+", "-", name.strip().lower())


def category_index(name: str) -> int:
    """The Fashion-MNIST class id of a category name; ``InvalidInput`` if unknown."""
    key = _normalise(name)
    names = {_normalise(n): i for i, n in enumerate(CLASS_NAMES)}
    labels = {label: i for i, label in enumerate(CLASS_LABELS)}
    key = ALIASES.get(key, key)
    if key in labels:
        return labels[key]
    if key in names:
        return names[key]
    known = ", ".join(CLASS_LABELS)
    raise InvalidInput(f"artwork.category: unknown category {name!r} (known: {known})")


def gan_images(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` as float images (N, 1, 28, 28) in [-1, 1] and labels (N,)."""
    data = load_split(split)
    return data.images.float().div_(127.5).sub_(1.0), data.labels
