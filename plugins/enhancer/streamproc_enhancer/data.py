"""Training and held-out photographs, by source, and the degradations uploads go through.

Sources are Debian wallpaper packages (real photographs and a few renders). Each one has
a role: ``train`` sources feed training only; ``heldout`` sources are never opened by
training and measure the model on images from sources it has not seen. A photograph is
read once, reduced (Lanczos, antialiased) so its longer side is ``WORKING_SIDE``: the
clean high-resolution reference. ``degrade`` turns a reference into what an upload
thumbnail looks like: bicubic downscaling, then optionally Gaussian noise and JPEG.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

Role = Literal["train", "heldout"]

SOURCES: dict[str, Role] = {
    "gnome-backgrounds": "train",
    "mate-backgrounds": "train",
    "ukui-wallpapers": "heldout",
    "lomiri-wallpapers-16.04": "heldout",
    "lomiri-wallpapers-20.04": "heldout",
}
"""Debian package -> role. Whole packages are held out, never single images."""

RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
WORKING_SIDE = 768
"""Longer side of a reference image after reduction (removes the originals' own artefacts)."""


@dataclass(frozen=True)
class Photo:
    """One reference image: its source package, file path and RGB pixels."""

    source: str
    path: Path
    image: Image.Image


@dataclass(frozen=True)
class Degradation:
    """How a thumbnail was made from its reference: bicubic 1/scale, noise, JPEG."""

    scale: int
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None


class MissingSource(RuntimeError):
    """A source package is not installed (``apt-get install`` it: see apt-packages.txt)."""


def source_files(package: str) -> list[Path]:
    """The raster images a Debian package installed, sorted, symlinks resolved, unique."""
    try:
        listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise MissingSource(f"{package}: not installed ({exc})") from None
    files = {Path(line).resolve() for line in listing.splitlines() if line.lower().endswith(RASTER_SUFFIXES)}
    return sorted(path for path in files if path.is_file())


def load_reference(path: Path) -> Image.Image:
    """An RGB reference: the file reduced so its longer side is ``WORKING_SIDE``."""
    with Image.open(path) as image:
        image.draft("RGB", (WORKING_SIDE, WORKING_SIDE))  # JPEG: decode at a reduced size
        rgb = image.convert("RGB")
    factor = WORKING_SIDE / max(rgb.size)
    if factor < 1:
        size = (max(1, round(rgb.width * factor)), max(1, round(rgb.height * factor)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return rgb


def photos(role: Role, per_source: int | None = None) -> Iterator[Photo]:
    """The reference images of the sources with ``role``, source by source (the first
    ``per_source`` files of each when given)."""
    for package, package_role in SOURCES.items():
        if package_role != role:
            continue
        for path in source_files(package)[:per_source]:
            yield Photo(package, path, load_reference(path))


def degrade(reference: Image.Image, degradation: Degradation, rng: np.random.Generator) -> Image.Image:
    """The thumbnail of ``reference``: bicubic downscale by ``degradation.scale`` (sides
    must divide), Gaussian noise of ``noise_sigma`` (0-255 units), JPEG at ``jpeg_quality``."""
    width, height = reference.size
    scale = degradation.scale
    if width % scale or height % scale:
        raise ValueError(f"reference {width}x{height} is not divisible by scale {scale}")
    small = reference.resize((width // scale, height // scale), Image.Resampling.BICUBIC)
    if degradation.noise_sigma > 0:
        pixels = np.asarray(small, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, degradation.noise_sigma, pixels.shape).astype(np.float32)
        small = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode=small.mode)
    if degradation.jpeg_quality is not None:
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=degradation.jpeg_quality)
        small = Image.open(io.BytesIO(buffer.getvalue())).convert(small.mode)
    return small


def random_crop(image: Image.Image, side: int, rng: np.random.Generator) -> Image.Image:
    """A ``side`` x ``side`` crop at a uniformly random position."""
    left = int(rng.integers(0, image.width - side + 1))
    top = int(rng.integers(0, image.height - side + 1))
    return image.crop((left, top, left + side, top + side))
