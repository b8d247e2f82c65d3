"""The ``detector`` plugin: clothing items found in an uploaded picture, with boxes.

An upload's image is decoded reduced to no less than the model needs (``needed_size``
``SCENE_SIDE`` x ``SCENE_SIDE``: a 4000x4000 JPEG is reduced in the decoder, a PNG box-
reduced band by band, so memory and time stay bounded whatever the upload's size),
converted to luma and fitted into the model's ``SCENE_SIDE`` square (longer side resized
to it, the rest filled by repeating the edge pixels). The network's heatmap peaks above
``min_score`` become boxes, class-aware non-maximum suppression at ``nms_iou`` removes
duplicates, and at most ``max_objects`` are kept. Each box then gets the tagger's
open-set verdict on its crop (``openset``): below ``rejection_threshold`` (or blank) the
box is rejected, as the tagger rejects a whole image. Uploads without image bytes are
not for this plugin (``prepare`` -> None).

Result body: ``objects`` (each ``label``, ``score``, ``box`` [x0, y0, x1, y1] in the
upload's pixels, x1/y1 exclusive, ``in_distribution``, ``in_distribution_score`` and,
when rejected, ``rejected_reason``), ``width`` and ``height`` of the upload, and
``model_version``. No object found is a valid answer: ``objects`` is empty. Boxes of a
reduced upload are mapped back to its pixels within the reduction factor.
"""

from __future__ import annotations

import io
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
from streamproc_detector.openset import BoxVerdict, BoxVerifier, crop_box
from streamproc_detector.scenes import SCENE_SIDE

DECODE_SIZE = (SCENE_SIDE, SCENE_SIDE)
"""The least the detector decodes: larger uploads are reduced while decoding."""


DEFAULT_BOX_REJECTION = 0.01
"""The shipped per-box operating point, chosen on validation data (``rejection``; README figures)."""


class DetectorOptions(BaseModel):
    """``plugins.detector.options``."""

    model_config = ConfigDict(extra="forbid")

    min_score: float = Field(0.3, ge=0.0, le=1.0, strict=True, allow_inf_nan=False, description="lowest score kept")
    nms_iou: float = Field(0.5, gt=0.0, le=1.0, allow_inf_nan=False, description="IoU above which NMS drops a box")
    max_objects: int = Field(20, ge=1, le=100, strict=True, description="most objects reported per image")
    rejection_threshold: float = Field(
        DEFAULT_BOX_REJECTION,
        ge=0.0,
        lt=1.0,
        strict=True,
        allow_inf_nan=False,
        description="boxes whose crop has a lower in_distribution_score (the tagger's) are rejected; 0: only blank",
    )
    weights_dir: str | None = Field(None, description="folder with detector.safetensors and config.json")


@dataclass(frozen=True)
class Fitted:
    """An upload fitted into the model's square: uint8 luma (S, S), the factor from upload
    pixels to model pixels; ``width``/``height`` are the upload's (before any reduction)."""

    luma: np.ndarray
    factor: float
    width: int
    height: int

    @property
    def pixels(self) -> torch.Tensor:
        """The network's input: float32 (1, S, S) in [0, 1]."""
        return torch.from_numpy(self.luma.astype(np.float32) / 255.0).unsqueeze(0)


def fit_square(image: Image.Image, size: tuple[int, int] | None = None) -> Fitted:
    """Luma of ``image`` with its longer side resized to ``SCENE_SIDE``, edge-padded to a
    square; ``size`` is the upload's (width, height) when ``image`` was decoded reduced."""
    width, height = size or image.size
    gray = image.convert("L")
    scale = SCENE_SIDE / max(gray.size)
    fitted = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
    resized = np.asarray(gray.resize(fitted, Image.Resampling.BILINEAR))
    padded = np.pad(resized, ((0, SCENE_SIDE - fitted[1]), (0, SCENE_SIDE - fitted[0])), mode="edge")
    return Fitted(padded, SCENE_SIDE / max(width, height), width, height)


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
        self.verifier = BoxVerifier(context.device)
        self.model_version = self.model.model_version

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Fitted | None:
        """The fitted image, decoded reduced to ``DECODE_SIZE``; ``None`` without image bytes.
        ``MediaError`` for undecodable images, ``InvalidInput`` for other event types or an
        image URI only."""
        if not isinstance(event, UploadEvent):
            raise InvalidInput(f"type: the detector takes upload events, got {event.type!r}")
        if event.image is None:
            if event.image_uri is not None:
                raise InvalidInput("image_uri: the detector needs the image bytes, not a URI")
            return None
        image = decode_image(event.image, needed_size=DECODE_SIZE)
        with Image.open(io.BytesIO(event.image)) as header:  # decoded above: the header reads
            return fit_square(image, header.size)

    def infer(self, batch: Sequence[Fitted]) -> list[tuple[Fitted, Detections, list[BoxVerdict]]]:
        """One pass over the stacked images, decoded to boxes in model pixels; then one
        pass of the tagger over every box's crop for its open-set verdict."""
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
        crops = [crop_box(item.luma, box) for item, found in zip(batch, detections, strict=True) for box in found.boxes]
        verdicts = iter(self.verifier.verdicts(crops))
        return [
            (item, found, [next(verdicts) for _ in found.boxes]) for item, found in zip(batch, detections, strict=True)
        ]

    def result(self, event: Event, output: tuple[Fitted, Detections, list[BoxVerdict]]) -> Mapping[str, Any]:
        """Objects with boxes in the upload's pixels and open-set verdicts (see the module docstring)."""
        fitted, found, verdicts = output
        limits = torch.tensor([fitted.width, fitted.height, fitted.width, fitted.height], dtype=torch.float32)
        boxes = torch.minimum((found.boxes / fitted.factor).clamp(min=0), limits)
        objects = [
            {
                "label": CLASS_LABELS[int(label)],
                "score": round(float(score), 4),
                "box": [round(float(v), 1) for v in box],
                **self._verdict(verdict),
            }
            for box, score, label, verdict in zip(boxes, found.scores, found.labels, verdicts, strict=True)
        ]
        return {"objects": objects, "width": fitted.width, "height": fitted.height, "model_version": self.model_version}

    def _verdict(self, verdict: BoxVerdict) -> dict[str, Any]:
        """``in_distribution``, its score and, when rejected, ``rejected_reason`` (the tagger's wording)."""
        score = verdict.in_distribution_score
        body: dict[str, Any] = {"in_distribution": True, "in_distribution_score": round(score, 6)}
        if verdict.blank:
            body.update(in_distribution=False, rejected_reason="blank box: no object in it")
        elif score < self.options.rejection_threshold:
            body.update(
                in_distribution=False,
                rejected_reason=f"not like the clothing the tagger knows: in_distribution_score {score:.4f} "
                f"< rejection_threshold {self.options.rejection_threshold}",
            )
        return body
