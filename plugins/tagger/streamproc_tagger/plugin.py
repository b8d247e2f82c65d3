"""The ``tagger`` plugin: top-k Fashion-MNIST tags for the image of an upload event.

Options (``plugins.tagger.options``): ``top_k`` (1-10, default 3), ``weights_dir``
(a folder with ``model.safetensors`` and ``config.json``; default: shipped weights).
Result body: ``{"tags": [{"label", "name", "probability"}, ...], "model_version"}``,
tags by decreasing calibrated probability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import Event, UploadEvent
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_tagger.data import CLASS_LABELS, CLASS_NAMES
from streamproc_tagger.model import TaggerNet, load_tagger
from streamproc_tagger.preprocess import image_tensor

DEFAULT_TOP_K = 3


class TaggerPlugin(Plugin):
    """Tags uploaded PNG/JPEG images with Fashion-MNIST classes and probabilities."""

    name: ClassVar[str] = "tagger"
    consumes: ClassVar[tuple[str, ...]] = ("upload",)
    produces: ClassVar[str] = "tags"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=64, max_wait_ms=5.0)

    def load(self, context: LoadContext) -> None:
        """Load the weights on ``context.device``; reads options ``top_k``, ``weights_dir``."""
        top_k = context.options.get("top_k", DEFAULT_TOP_K)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 10:
            raise ConfigError(f"plugins.tagger.options.top_k: an integer 1-10, got {top_k!r}")
        self.top_k = top_k
        self.context = context
        self.model: TaggerNet = load_tagger(context.device, context.options.get("weights_dir"))
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

    def infer(self, batch: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One forward pass over the stacked images; one probability vector (10,) each."""
        images = self.context.to_device(torch.stack(list(batch)))
        probs = self.model.probabilities(images).float().cpu()
        return list(probs.unbind(0))

    def result(self, event: Event, output: torch.Tensor) -> Mapping[str, Any]:
        """The ``top_k`` tags with their probabilities, and the model version."""
        probs, classes = output.topk(self.top_k)
        tags = [
            {"label": CLASS_LABELS[c], "name": CLASS_NAMES[c], "probability": round(float(p), 6)}
            for p, c in zip(probs.tolist(), classes.tolist(), strict=True)
        ]
        return {"tags": tags, "model_version": self.model_version}
