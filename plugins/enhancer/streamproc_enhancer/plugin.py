"""The ``enhancer`` plugin: sub-pixel CNN super-resolution (x2, x4) of images.

It consumes two things (``consumes``, configurable like every route):

- ``upload`` events with image bytes: the result is the restored, upscaled PNG. Uploads
  without image bytes are not for this plugin (``prepare`` -> None). Neither is an
  upload that requests artwork: the engine publishes one result per plugin and input
  event (event id + plugin is the idempotency key), and that upload's result is its
  enhanced artwork, which arrives through the chain.
- ``artwork`` results (the artwork generator's output, chained by the router): every
  generated PNG is upscaled, so artwork reaches users at ``min_output_side`` or more.

The scale is ``options.scale`` when set, otherwise the smaller of x2 and x4 that brings
the image's shorter side to ``min_output_side`` (x4 when neither does).

Bounds: an event whose outputs would exceed ``max_output_pixels`` is refused
(``InvalidInput`` with the sizes and the limit), so one event cannot monopolise the
worker; an upload is refused from its header, before its pixels are decoded, when it
has more than ``max_output_pixels / scale**2`` pixels at the smallest scale it could get
(``MediaError`` with the sizes and the limit; artwork images likewise). Images larger than ``tile_side`` are
upscaled in overlapping tiles blended across the seams (``tiling``: the same output as
the whole image at once, with bounded memory per pass); tiles of one scale and size from
every event of a batch share passes of at most ``MAX_PASS_PIXELS`` input pixels.

Result body: ``source`` (upload | artwork), ``scale``, ``width``/``height`` of the
output, ``format`` "png", ``images`` (base64 PNGs: one for an upload, one per artwork
image), ``model_version``; artwork results also carry ``category`` and ``seed``.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import DerivedEvent, Event, UploadEvent
from streamproc.media import decode_image
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_enhancer.imaging import compose, luma_tensor
from streamproc_enhancer.model import SCALES, Enhancer, load_enhancer, shipped_weights_dir
from streamproc_enhancer.tiling import Tile, blend, tile_grid

DEFAULT_MAX_OUTPUT_PIXELS = 1_000_000
"""At most 3 bytes per pixel in a PNG (RGB, incompressible), 4 in base64: the result body
stays under the engine's default ``limits.max_result_bytes`` (4 MiB) whatever the image."""
BLEND_WIDTH = 4
"""Input pixels over which neighbouring tiles' weights ramp (beyond twice the receptive radius)."""
MAX_PASS_PIXELS = 65_536
"""Most input pixels in one network pass (at least one tile). Bounds the activations' memory
(48 float channels: 12.6 MB per layer) and keeps a pass fast on a CPU: measured on the
2-core machine, one thread, the network's time per pixel is flat up to about 50,000 pixels
a pass and rises by 40% at 100,000 and by 100% at 200,000 (160x160 images, passes of 1-8)."""


class EnhancerOptions(BaseModel):
    """``plugins.enhancer.options``."""

    model_config = ConfigDict(extra="forbid")

    scale: Literal[2, 4] | None = Field(
        None, description="fixed upscaling factor; default: the smallest of 2 and 4 reaching min_output_side"
    )
    min_output_side: int = Field(112, ge=1, le=4096, strict=True, description="shorter output side to reach")
    tile_side: int = Field(
        256,
        ge=32,
        le=1024,
        strict=True,
        description="images with a larger side are upscaled in overlapping tiles (tiles overlap: smaller tiles "
        "mean more pixels computed twice)",
    )
    max_output_pixels: int = Field(
        DEFAULT_MAX_OUTPUT_PIXELS, ge=1, strict=True, description="refuse an event whose outputs total more pixels"
    )
    weights_dir: str | None = Field(None, description="folder with enhancer.safetensors and config.json")


@dataclass(frozen=True)
class EnhanceJob:
    """A prepared event: its decoded images (``L`` or ``RGB``) and the scale to apply."""

    source: Literal["upload", "artwork"]
    images: tuple[Image.Image, ...]
    scale: int


@dataclass(frozen=True)
class Enhanced:
    """A job's output: the upscaled images, in order."""

    job: EnhanceJob
    images: tuple[Image.Image, ...]


def encode_png(image: Image.Image) -> str:
    """Base64 PNG of ``image``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class EnhancerPlugin(Plugin):
    """Upscales thumbnails and generated artwork with a sub-pixel CNN."""

    name: ClassVar[str] = "enhancer"
    consumes: ClassVar[tuple[str, ...]] = ("upload", "artwork")
    produces: ClassVar[str] = "enhance"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=16, max_wait_ms=10.0, max_queue=128)
    Options: ClassVar[type[BaseModel] | None] = EnhancerOptions

    def load(self, context: LoadContext) -> None:
        """Load both scales' networks on ``context.device``; ``ConfigError`` when
        ``weights_dir`` has no enhancer weights."""
        self.options = EnhancerOptions.model_validate(dict(context.options))
        self.context = context
        folder = Path(self.options.weights_dir) if self.options.weights_dir else shipped_weights_dir()
        try:
            self.model: Enhancer = load_enhancer(context.device, folder)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"plugins.enhancer.options.weights_dir: {folder} has no enhancer weights ({exc.filename})"
            ) from None
        self.model_version = self.model.model_version

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> EnhanceJob | None:
        """The decoded images and scale; ``None`` for uploads without image bytes or with
        an artwork request (their result comes through the artwork chain).

        Raises ``MediaError`` for undecodable images or uploads refused from their header
        (see the module docstring) and ``InvalidInput`` for other event types, artwork
        bodies without PNG images, or work above ``max_output_pixels``."""
        if isinstance(event, UploadEvent):
            if event.image is None or event.artwork is not None:
                return None
            return self._job("upload", (self._decode(event.image),))
        if isinstance(event, DerivedEvent) and event.type == "artwork":
            return self._job("artwork", self._artwork_images(event.body))
        raise InvalidInput(f"type: the enhancer takes uploads and artwork results, got {event.type!r}")

    def infer(self, batch: Sequence[EnhanceJob]) -> list[Enhanced]:
        """Every image cut into tiles (one tile when it fits ``tile_side``); tiles of one
        scale and size go through the network together, then each image's tiles are blended."""
        overlap = 2 * self.model.receptive_radius + BLEND_WIDTH
        grids = {
            (j, i): tile_grid(image.height, image.width, self.options.tile_side, overlap)
            for j, job in enumerate(batch)
            for i, image in enumerate(job.images)
        }
        groups: dict[tuple[int, int, int], list[tuple[int, int, Tile]]] = {}
        for (j, i), tiles in grids.items():
            for tile in tiles:
                groups.setdefault((batch[j].scale, tile.height, tile.width), []).append((j, i, tile))
        lumas = {(j, i): luma_tensor(batch[j].images[i]) for j, i in grids}
        restored: dict[tuple[int, int, Tile], torch.Tensor] = {}
        for (scale, height, width), members in groups.items():
            per_pass = max(1, MAX_PASS_PIXELS // (height * width))
            for start in range(0, len(members), per_pass):
                chunk = members[start : start + per_pass]
                stacked = torch.stack([lumas[j, i][:, t.top : t.bottom, t.left : t.right] for j, i, t in chunk])
                output = self.model.upscale(self.context.to_device(stacked), scale).float().cpu()
                restored.update(zip(chunk, output, strict=True))
        enhanced = []
        for j, job in enumerate(batch):
            images = []
            for i, image in enumerate(job.images):
                tiles = grids[j, i]
                outputs = [restored[j, i, tile] for tile in tiles]
                whole = blend(outputs, tiles, image.height, image.width, job.scale, self.model.receptive_radius)
                images.append(compose(image, whole, job.scale))
            enhanced.append(Enhanced(job, tuple(images)))
        return enhanced

    def result(self, event: Event, output: Enhanced) -> Mapping[str, Any]:
        """The upscaled PNGs with scale, size and provenance (see the module docstring)."""
        first = output.images[0]
        body: dict[str, Any] = {
            "source": output.job.source,
            "scale": output.job.scale,
            "width": first.width,
            "height": first.height,
            "format": "png",
            "images": [encode_png(image) for image in output.images],
            "model_version": self.model_version,
        }
        if isinstance(event, DerivedEvent):
            body["category"] = event.body.get("category")
            body["seed"] = event.body.get("seed")
        return body

    def _job(self, source: Literal["upload", "artwork"], images: tuple[Image.Image, ...]) -> EnhanceJob:
        scale = self.options.scale or self._auto_scale(min(min(image.size) for image in images))
        pixels = sum(image.width * image.height for image in images) * scale * scale
        if pixels > self.options.max_output_pixels:
            sizes = ", ".join(f"{image.width}x{image.height}" for image in images)
            raise InvalidInput(
                f"image: x{scale} of {sizes} is {pixels} output pixels, above the enhancer's "
                f"limit of {self.options.max_output_pixels}"
            )
        return EnhanceJob(source, images, scale)

    def _auto_scale(self, shorter_side: int) -> int:
        for scale in SCALES:
            if shorter_side * scale >= self.options.min_output_side:
                return scale
        return SCALES[-1]

    def _decode(self, data: bytes) -> Image.Image:
        """The image, refused from its header above the most input pixels any scale allows."""
        smallest_scale = self.options.scale or SCALES[0]
        return decode_image(data, max_pixels=self.options.max_output_pixels // smallest_scale**2)

    def _artwork_images(self, body: Mapping[str, Any]) -> tuple[Image.Image, ...]:
        encoded = body.get("images")
        if not isinstance(encoded, list) or not encoded or not all(isinstance(item, str) for item in encoded):
            raise InvalidInput("images: an artwork result needs a non-empty list of base64 PNGs")
        try:
            return tuple(self._decode(base64.b64decode(item, validate=True)) for item in encoded)
        except binascii.Error:
            raise InvalidInput("images: an artwork image is not valid base64") from None
