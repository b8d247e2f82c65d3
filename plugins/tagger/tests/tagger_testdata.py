"""Test data for the tagger tests: real photos as raw file bytes, upload events, bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamproc_tagger.data import DATA_DIR

from streamproc.events import UploadEvent
from streamproc.testing import PluginHarness


def real_photo_paths() -> dict[str, Path]:
    """scikit-image's astronaut/chelsea PNGs and scikit-learn's china/flower JPEGs."""
    skimage_data = pytest.importorskip("skimage.data")
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    paths = {name: Path(skimage_data.data_dir) / f"{name}.png" for name in ("astronaut", "chelsea")}
    for filename in sklearn_datasets.load_sample_images().filenames:
        paths[Path(filename).stem] = Path(filename)
    return paths


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """The raw bytes of four real photos (two PNG, two JPEG)."""
    return {name: path.read_bytes() for name, path in real_photo_paths().items()}


def png_bytes(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upload(image: bytes | None = None, n: int = 0, **fields: object) -> UploadEvent:
    """A valid upload event carrying ``image``."""
    return UploadEvent(
        id=f"evt-{n}",
        type="upload",
        ts=1_700_000_000_000 + n,
        user_id="user-1",
        upload_id=f"upload-{n}",
        image=image,
        title=fields.pop("title", "a photo"),
        **fields,
    )


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic random bytes."""
    return np.random.default_rng(seed).bytes(size)


needs_fashion_mnist = pytest.mark.skipif(
    not DATA_DIR.exists(), reason=f"{DATA_DIR} missing: apt-get install dataset-fashion-mnist"
)


@pytest.fixture(scope="module")
def harness() -> PluginHarness:
    """The tagger, found through its entry point and run as the worker runs it, on CPU."""
    torch.set_num_threads(1)
    return PluginHarness.load("tagger")


def bodies(harness: PluginHarness, images: list[bytes]) -> list[dict]:
    """The result body of an upload carrying each image, in order."""
    results = harness.results([upload(image, n) for n, image in enumerate(images)])
    assert all(body is not None for body in results)
    return [body for body in results if body is not None]
