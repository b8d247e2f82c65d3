"""The ``detector`` plugin: clothing items found in an uploaded picture, with boxes.

An upload's image is converted to luma and fitted into the model's ``SCENE_SIDE``
square (longer side resized to it, the rest filled by repeating the edge pixels), so
the work per image is fixed whatever the upload's size (decoding is bounded by the
media limits). The network's heatmap peaks above ``min_score`` become boxes, class-aware
non-maximum suppression at ``nms_iou`` removes duplicates, and at most ``max_objects``
are kept. Uploads without image bytes are not for this plugin (``prepare`` -> None).

Result body: ``objects`` (each ``label``, ``score``, ``box`` [x0, y0, x1, y1] in the
upload's pixels, x1/y1 exclusive), ``width`` and ``height`` of the upload, and
``model_version``. No object found is a valid answer: ``objects`` is empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from streamproc_tagger.data import CLASS_LABELS

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import Event, UploadEvent
from streamproc.media import decode_image
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_detector.model import Detections, ItemDetector, decode, load_detector, shipped_weights_dir
from streamproc_detector.scenes import SCENE_SIDE


class DetectorOptions(BaseModel):
    """``plugins.detector.options``."""

    model_config = ConfigDict(extra="forbid")

    min_score: float = Field(0.3, ge=0.0, le=1.0, strict=True, allow_inf_nan=False, description="lowest score kept")
    nms_iou: float = Field(0.5, gt=0.0, le=1.0, allow_inf_nan=False, description="IoU above which NMS drops a box")
    max_objects: int = Field(20, ge=1, le=100, strict=True, description="most objects reported per image")
    weights_dir: str | None = Field(None, description="folder with detector.safetensors and config.json")


@dataclass(frozen=True)
class Fitted:
    """An upload fitted into the model's square: luma (1, S, S) in [0, 1] and the factor
    from upload pixels to model pixels; ``width``/``height`` are the upload's."""

    pixels: torch.Tensor
    factor: float
    width: int
    height: int


def fit_square(image: Image.Image) -> Fitted:
    """Luma of ``image`` with its longer side resized to ``SCENE_SIDE``, edge-padded to a square."""
    gray = image.convert("L")
    factor = SCENE_SIDE / max(gray.size)
    size = (max(1, round(gray.width * factor)), max(1, round(gray.height * factor)))
    resized = np.asarray(gray.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    padded = np.pad(resized, ((0, SCENE_SIDE - size[1]), (0, SCENE_SIDE - size[0])), mode="edge")
    return Fitted(torch.from_numpy(padded / 255.0).unsqueeze(0), factor, image.width, image.height)


class DetectorPlugin(Plugin):
    """Finds Fashion-MNIST clothing items in uploaded pictures: boxes, labels, scores."""

    name: ClassVar[str] = "detector"
    consumes: ClassVar[tuple[str, ...]] = ("upload",)
    produces: ClassVar[str] = "objects"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=32, max_wait_ms=5.0)
    Options: ClassVar[type[BaseModel] | None] = DetectorOptions

    def load(self, context: LoadContext) -> None:
        """Load the network on ``context.device``; ``ConfigError`` when ``weights_dir`` has no weights."""
        self.options = DetectorOptions.model_validate(dict(context.options))
        self.context = context
        folder = Path(self.options.weights_dir) if self.options.weights_dir else shipped_weights_dir()
        try:
            self.model: ItemDetector = load_detector(context.device, folder)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"plugins.detector.options.weights_dir: {folder} has no detector weights ({exc.filename})"
            ) from None
        self.model_version = self.model.model_version

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Fitted | None:
        """The fitted image; ``None`` without image bytes. ``MediaError`` for undecodable
        images, ``InvalidInput`` for other event types or an image URI only."""
        if not isinstance(event, UploadEvent):
            raise InvalidInput(f"type: the detector takes upload events, got {event.type!r}")
        if event.image is None:
            if event.image_uri is not None:
                raise InvalidInput("image_uri: the detector needs the image bytes, not a URI")
            return None
        return fit_square(decode_image(event.image))

    def infer(self, batch: Sequence[Fitted]) -> list[tuple[Fitted, Detections]]:
        """One pass over the stacked images, decoded to boxes in model pixels."""
        images = self.context.to_device(torch.stack([item.pixels for item in batch]))
        heat, size, offset = self.model(images)
        detections = decode(
            heat.float(),
            size.float(),
            offset.float(),
            self.options.min_score,
            self.options.max_objects,
            self.options.nms_iou,
        )
        return list(zip(batch, detections, strict=True))

    def result(self, event: Event, output: tuple[Fitted, Detections]) -> Mapping[str, Any]:
        """Objects with boxes in the upload's pixels (see the module docstring)."""
        fitted, found = output
        limits = torch.tensor([fitted.width, fitted.height, fitted.width, fitted.height], dtype=torch.float32)
        boxes = torch.minimum((found.boxes / fitted.factor).clamp(min=0), limits)
        objects = [
            {
                "label": CLASS_LABELS[int(label)],
                "score": round(float(score), 4),
                "box": [round(float(v), 1) for v in box],
            }
            for box, score, label in zip(boxes, found.scores, found.labels, strict=True)
        ]
        return {"objects": objects, "width": fitted.width, "height": fitted.height, "model_version": self.model_version}
