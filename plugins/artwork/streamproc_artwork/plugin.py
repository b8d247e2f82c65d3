"""The ``artwork`` plugin: class-conditional Fashion-MNIST images on request.

An upload event with an ``artwork`` request (``category``, ``count``, ``seed``) gets
``count`` PNG images of that category, base64-encoded in the result. The latent
vectors are drawn on the CPU from a ``torch.Generator`` seeded with the request's
seed, so a replayed event yields the same images (bit-exact on the same device and
precision). Uploads without a request are not for this plugin (``prepare`` -> None).

Truthful size: the generator draws at ``NATIVE_SIZE`` (28x28) and by default the PNGs
are exactly what it drew. An ``image_size`` above 28 is a bilinear upscale, and the
result says so (``native_size`` 28, ``upscaling`` "bilinear"; "none" at 28): it adds
pixels, not detail. Larger, sharper images are the enhancer's job (its learned x4
brings 28 to 112).

Options (``plugins.artwork.options``): the ``ArtworkOptions`` model below.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from streamproc_tagger.data import CLASS_LABELS

from streamproc.errors import InvalidInput
from streamproc.events import Event, UploadEvent
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_artwork.data import category_index
from streamproc_artwork.model import LATENT_DIM, NATIVE_SIZE, Generator, load_generator, to_uint8

DEFAULT_IMAGE_SIZE = NATIVE_SIZE


@dataclass(frozen=True)
class ArtworkJob:
    """A prepared request: latents (count, LATENT_DIM) on the CPU and the class id."""

    latents: torch.Tensor
    category: int
    seed: int


@dataclass(frozen=True)
class Artwork:
    """A job's output: uint8 images (count, NATIVE_SIZE, NATIVE_SIZE), white object on black."""

    pixels: np.ndarray
    category: int
    seed: int


def latents_for(seed: int, count: int) -> torch.Tensor:
    """The request's latent vectors: standard normals from a CPU generator seeded ``seed``."""
    return torch.randn(count, LATENT_DIM, generator=torch.Generator().manual_seed(seed))


def encode_png(pixels: np.ndarray, size: int) -> str:
    """uint8 (NATIVE_SIZE, NATIVE_SIZE) -> base64 PNG of ``size`` x ``size`` (bilinear
    upscaling when larger)."""
    image = Image.fromarray(pixels)
    if size != pixels.shape[0]:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class ArtworkOptions(BaseModel):
    """``plugins.artwork.options``."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(
        DEFAULT_IMAGE_SIZE,
        ge=NATIVE_SIZE,
        le=256,
        strict=True,
        description="PNG side in pixels: 28 = what the generator draws; larger = a bilinear upscale (labelled)",
    )
    weights_dir: str | None = Field(None, description="folder of generator weights (default: the shipped ones)")


class ArtworkPlugin(Plugin):
    """Generates seeded Fashion-MNIST-style images of a requested category."""

    name: ClassVar[str] = "artwork"
    consumes: ClassVar[tuple[str, ...]] = ("upload",)
    produces: ClassVar[str] = "artwork"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=16, max_wait_ms=5.0)
    Options: ClassVar[type[BaseModel]] = ArtworkOptions

    def load(self, context: LoadContext) -> None:
        """Load the generator on ``context.device``; ``context.options`` are validated
        ``ArtworkOptions``."""
        options = ArtworkOptions.model_validate(dict(context.options))
        self.image_size = options.image_size
        self.context = context
        self.model: Generator = load_generator(context.device, options.weights_dir)
        self.model_version = self.model.model_version

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> ArtworkJob | None:
        """The job of an upload's artwork request; ``None`` when there is no request.

        Raises ``InvalidInput`` for an unknown category (naming the known ones) or an
        event that is not an upload.
        """
        if not isinstance(event, UploadEvent):
            raise InvalidInput(f"type: the artwork plugin takes upload events, got {event.type!r}")
        request = event.artwork
        if request is None:
            return None
        return ArtworkJob(latents_for(request.seed, request.count), category_index(request.category), request.seed)

    def infer(self, batch: Sequence[ArtworkJob]) -> list[Artwork]:
        """One generator pass over all requested images; one ``Artwork`` per job."""
        latents = torch.cat([job.latents for job in batch])
        classes = torch.cat([torch.full((len(job.latents),), job.category, dtype=torch.long) for job in batch])
        images = self.model(self.context.to_device(latents), self.context.to_device(classes))
        pixels = to_uint8(images).cpu()
        chunks = pixels.split([len(job.latents) for job in batch])
        return [Artwork(chunk[:, 0].numpy(), job.category, job.seed) for chunk, job in zip(chunks, batch, strict=True)]

    def result(self, event: Event, output: Artwork) -> Mapping[str, Any]:
        """Base64 PNGs (white object on black), with category, seed, model version and
        the truth about their size: ``native_size`` and ``upscaling`` ("none" | "bilinear")."""
        return {
            "category": CLASS_LABELS[output.category],
            "seed": output.seed,
            "format": "png",
            "width": self.image_size,
            "height": self.image_size,
            "native_size": NATIVE_SIZE,
            "upscaling": "none" if self.image_size == NATIVE_SIZE else "bilinear",
            "images": [encode_png(pixels, self.image_size) for pixels in output.pixels],
            "model_version": self.model_version,
        }
