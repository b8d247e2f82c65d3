"""The ``tagger`` plugin: a Fashion-MNIST clothing label for the image of an upload event,
or ``"unknown"`` when the image is not like the clothing the model knows.

Options (``plugins.tagger.options``, the ``TaggerPlugin.Options`` model, validated by the
engine): ``top_k`` (1-10, default 3), ``rejection_threshold`` (a number in [0, 1), default
0.02: images whose ``in_distribution_score`` is below it are rejected; about that
fraction of real clothing items is rejected too; 0 rejects only blank images),
``weights_dir`` (a folder with ``model.safetensors``, ``config.json``, ``ood.safetensors``
and ``ood.json``; default: the shipped weights).

Result body::

    {"label": "sneaker" | "unknown", "in_distribution": bool, "in_distribution_score": float,
     "rejected_reason": str (only when rejected),
     "tags": [{"label", "name", "probability"}, ...], "model_version": str}

``tags`` are always the ``top_k`` closed-set candidates by decreasing calibrated
probability; when ``in_distribution`` is false they are NOT an answer (``label`` is
``"unknown"``): the probabilities only say which clothing class the image is least unlike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import Event, UploadEvent
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_tagger.data import CLASS_LABELS, CLASS_NAMES
from streamproc_tagger.model import TaggerNet, load_tagger, shipped_weights_dir
from streamproc_tagger.openset import (
    BLANK_LEVEL,
    DEFAULT_REJECTION_THRESHOLD,
    DetectorMismatch,
    ModelOutputs,
    load_detector,
)
from streamproc_tagger.preprocess import image_tensor

DEFAULT_TOP_K = 3
UNKNOWN_LABEL = "unknown"


class TaggerOptions(BaseModel):
    """``plugins.tagger.options``; unknown keys are refused (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(
        DEFAULT_TOP_K,
        ge=1,
        le=10,
        strict=True,
        description="How many closed-set candidate tags (label, name, calibrated probability) each result lists.",
    )
    rejection_threshold: float = Field(
        DEFAULT_REJECTION_THRESHOLD,
        ge=0.0,
        lt=1.0,
        strict=True,
        allow_inf_nan=False,
        description="Images whose in_distribution_score is below this are answered label 'unknown' "
        "(in_distribution false, with a rejected_reason). About this fraction of real clothing items is "
        "rejected too; 0 rejects only blank images. See the model card for the measured false-accept rates.",
    )
    weights_dir: str | None = Field(
        None,
        description="Folder with model.safetensors, config.json, ood.safetensors and ood.json; "
        "default: the weights shipped in the package.",
    )


@dataclass(frozen=True)
class TaggerOutput:
    """``infer``'s output for one image: calibrated class probabilities (10,), the
    calibrated in-distribution score and whether the preprocessed image was blank."""

    probabilities: torch.Tensor
    in_distribution_score: float
    blank: bool


class TaggerPlugin(Plugin):
    """Tags uploaded PNG/JPEG images with Fashion-MNIST classes and probabilities."""

    name: ClassVar[str] = "tagger"
    consumes: ClassVar[tuple[str, ...]] = ("upload",)
    produces: ClassVar[str] = "tags"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=64, max_wait_ms=5.0)
    Options: ClassVar[type[BaseModel] | None] = TaggerOptions

    def load(self, context: LoadContext) -> None:
        """Load the weights and the open-set detector on ``context.device``. ``context.options``
        are the engine-validated ``TaggerOptions`` (defaults filled in). Raises ``ConfigError``
        for a weights folder without weights or detector, or whose detector was fitted for other weights."""
        options = TaggerOptions.model_validate(dict(context.options))
        self.top_k = options.top_k
        self.rejection_threshold = options.rejection_threshold
        self.context = context
        folder = Path(options.weights_dir) if options.weights_dir else shipped_weights_dir()
        try:
            self.model: TaggerNet = load_tagger(context.device, folder)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"plugins.tagger.options.weights_dir: {folder} has no tagger weights ({exc.filename})"
            ) from None
        try:
            self.detector = load_detector(folder)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"plugins.tagger.options.weights_dir: {folder} has no open-set detector ({exc.filename}); "
                "run python -m streamproc_tagger.calibrate --weights-dir on it"
            ) from None
        except DetectorMismatch as exc:
            raise ConfigError(f"plugins.tagger.options.weights_dir: {exc}") from None
        if self.detector.model_version != self.model.model_version:
            raise ConfigError(
                f"plugins.tagger.options.weights_dir: the open-set detector in {folder} was fitted for "
                f"{self.detector.model_version}, not for these weights ({self.model.model_version}); "
                f"run python -m streamproc_tagger.calibrate --weights-dir {folder}"
            )
        self.model_version = self.model.model_version

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> torch.Tensor | None:
        """The preprocessed image (1, 28, 28) of an upload; ``None`` when it has no image.

        Raises ``MediaError`` for bytes that are not a decodable PNG/JPEG, and
        ``InvalidInput`` for events that are not uploads or carry only an image URI.
        """
        if not isinstance(event, UploadEvent):
            raise InvalidInput(f"type: the tagger takes upload events, got {event.type!r}")
        if event.image is None:
            if event.image_uri is not None:
                raise InvalidInput("image_uri: the tagger needs the image bytes, not a URI")
            return None
        return image_tensor(event.image)

    def infer(self, batch: Sequence[torch.Tensor]) -> list[TaggerOutput]:
        """One forward pass over the stacked images; probabilities and open-set score of each.

        The detector's arithmetic (scores in float32, p-values in float64) runs on the CPU,
        whatever the device and autocast precision of the forward pass."""
        stacked = torch.stack(list(batch))
        images = self.context.to_device(stacked)
        features = self.model.features(images)
        logits = self.model.head(features)
        outputs = ModelOutputs(
            logits=logits.float().cpu(),
            features=features.float().cpu(),
            blank=stacked.flatten(1).amax(1) <= BLANK_LEVEL,
        )
        probs = torch.softmax(outputs.logits / float(self.model.temperature), dim=1)
        scores = self.detector.in_distribution_score(outputs)
        return [
            TaggerOutput(p, float(s), bool(b))
            for p, s, b in zip(probs.unbind(0), scores.tolist(), outputs.blank.tolist(), strict=True)
        ]

    def result(self, event: Event, output: TaggerOutput) -> Mapping[str, Any]:
        """The label (or ``"unknown"``), the open-set verdict and score, the ``top_k`` tags."""
        probs, classes = output.probabilities.topk(self.top_k)
        tags = [
            {"label": CLASS_LABELS[c], "name": CLASS_NAMES[c], "probability": round(float(p), 6)}
            for p, c in zip(probs.tolist(), classes.tolist(), strict=True)
        ]
        score = output.in_distribution_score
        body: dict[str, Any] = {"in_distribution": True, "in_distribution_score": round(score, 6)}
        if output.blank:
            body.update(in_distribution=False, rejected_reason="blank image: no object to tag")
        elif score < self.rejection_threshold:
            body.update(
                in_distribution=False,
                rejected_reason=f"not like the clothing the model knows: in_distribution_score {score:.4f} "
                f"< rejection_threshold {self.rejection_threshold}",
            )
        body["label"] = tags[0]["label"] if body["in_distribution"] else UNKNOWN_LABEL
        return {**body, "tags": tags, "model_version": self.model_version}
