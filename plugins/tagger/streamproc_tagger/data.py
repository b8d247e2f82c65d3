"""Fashion-MNIST: loading the Debian copy and the deterministic train/validation split.

The data come from Debian's ``dataset-fashion-mnist`` (MIT licence, Zalando Research):
four gzip'd idx files under ``/usr/share/datasets/fashion-mnist``. Images are 28x28
uint8, white object on a black background. The official 10,000-image test set is only
used for final reports; validation is a stratified, seeded 10% of the 60,000 training
images (``split_train_validation``), so no split file needs to ship.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATA_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
DATA_LICENCE = "MIT (Fashion-MNIST, Zalando Research; Debian package dataset-fashion-mnist)"
CLASS_LABELS = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
"""Machine-readable class labels, index = Fashion-MNIST label id."""
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Human-readable class names, index = Fashion-MNIST label id."""
SPLIT_SEED = 20240601
VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class ImageSet:
    """Images as a uint8 tensor (N, 1, 28, 28) and labels as an int64 tensor (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray) -> ImageSet:
        """The images at ``index``, in that order."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx])


def _read_idx(path: Path) -> np.ndarray:
    """Read one gzip'd idx file (magic, dims, big-endian uint8 payload)."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: install the Debian package dataset-fashion-mnist or set FASHION_MNIST_DIR"
        )
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str, data_dir: Path = DATA_DIR) -> ImageSet:
    """Load the official ``"train"`` (60,000) or ``"test"`` (10,000) split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz")
    return ImageSet(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
    )


def split_train_validation(
    train: ImageSet, fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED
) -> tuple[ImageSet, ImageSet]:
    """Stratified split of the training set into (fit, validation), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    labels = train.labels.numpy()
    fit_idx, val_idx = [], []
    for cls in range(len(CLASS_LABELS)):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = round(len(members) * fraction)
        val_idx.append(members[:n_val])
        fit_idx.append(members[n_val:])
    return train.subset(np.sort(np.concatenate(fit_idx))), train.subset(np.sort(np.concatenate(val_idx)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1], the input scale of every model here."""
    return images.float().div_(255.0)
