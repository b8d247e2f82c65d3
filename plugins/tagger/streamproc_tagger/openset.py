"""Open-set rejection: is this image one of the ten kinds of clothing the tagger knows?

A closed-set classifier gives every image one of its classes. ``OpenSetDetector`` adds
a score saying how much an image looks like the Fashion-MNIST items the model was
trained on, and a rule for images with nothing in them:

- ``raw_score``: one of the candidate scores (higher = more typical of clothing):
  ``msp`` (max softmax probability, the baseline), ``energy`` (logsumexp of the logits),
  ``mahalanobis`` (minus the smallest class-conditional Mahalanobis distance of the
  128 penultimate features, shared covariance fitted on the fit split), or
  ``mahalanobis+energy`` (the sum of both, each standardised on validation items).
  Which one ships is chosen on validation data (``calibrate``).
- ``in_distribution_score``: the raw score turned into a conformal p-value against the
  scores of the 6,000 held-out validation items: the fraction of real items that look
  at most as typical as this image (linearly interpolated between neighbouring
  reference scores, so that it is continuous in the raw score and does not jump by a
  whole step when batching changes the last bits of a logit). On real Fashion-MNIST
  items it is close to uniform in (0, 1], so rejecting below a threshold ``t``
  rejects about a fraction ``t`` of real items: that is the sense in which it is
  calibrated. It is not the probability that the image is clothing.
- ``blank``: an image whose preprocessed pixels are all at or below the trim level
  (a one-colour image, a 1x1 image) has no object; it scores 0 and is rejected.

The fitted tensors live in ``ood.safetensors`` next to the model weights, the choice in
``ood.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from streamproc_tagger.model import FEATURE_DIM, TaggerNet
from streamproc_tagger.preprocess import TRIM_THRESHOLD

DEFAULT_REJECTION_THRESHOLD = 0.02
"""The shipped operating point: about 2% of real clothing items are rejected."""
DETECTOR_FILE = "ood.safetensors"
DETECTOR_CONFIG = "ood.json"
METHODS = ("msp", "energy", "mahalanobis", "mahalanobis+energy")
BLANK_LEVEL = TRIM_THRESHOLD / 255.0
COVARIANCE_SHRINKAGE = 1e-3


@dataclass(frozen=True)
class ModelOutputs:
    """What the detector reads from one forward pass: logits (N, 10), features (N, 128),
    and whether each preprocessed image is blank (N,)."""

    logits: torch.Tensor
    features: torch.Tensor
    blank: torch.Tensor


@torch.no_grad()
def model_outputs(model: TaggerNet, images: torch.Tensor, batch_size: int = 500) -> ModelOutputs:
    """Logits, features and blank flags of float images (N, 1, 28, 28) in [0, 1]."""
    model.eval()
    logits, features = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        feats = model.features(chunk)
        features.append(feats.float())
        logits.append(model.head(feats).float())
    blank = images.flatten(1).amax(1) <= BLANK_LEVEL if len(images) else torch.zeros(0, dtype=torch.bool)
    return ModelOutputs(torch.cat(logits), torch.cat(features), blank)


@dataclass(frozen=True)
class GaussianFit:
    """Class means (10, 128) and the shared precision matrix (128, 128) of the features."""

    means: torch.Tensor
    precision: torch.Tensor


def fit_gaussians(features: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> GaussianFit:
    """Class-conditional Gaussians with a shared (slightly shrunk) covariance."""
    features = features.double()
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    covariance += COVARIANCE_SHRINKAGE * covariance.diagonal().mean() * torch.eye(features.shape[1], dtype=torch.double)
    return GaussianFit(means.float(), torch.linalg.inv(covariance).float())


def mahalanobis_score(features: torch.Tensor, fit: GaussianFit) -> torch.Tensor:
    """Minus the smallest squared Mahalanobis distance to a class mean (N,)."""
    diff = features[:, None, :] - fit.means[None, :, :]
    distances = torch.einsum("nci,ij,ncj->nc", diff, fit.precision, diff)
    return -distances.min(1).values


def candidate_scores(outputs: ModelOutputs, temperature: float, fit: GaussianFit) -> dict[str, torch.Tensor]:
    """The raw single-method scores (higher = more like clothing), keyed by method."""
    return {
        "msp": torch.softmax(outputs.logits / temperature, 1).amax(1),
        "energy": torch.logsumexp(outputs.logits, 1),
        "mahalanobis": mahalanobis_score(outputs.features, fit),
    }


class OpenSetDetector:
    """A fitted detector: a raw score, the reference scores of validation items, the blank rule."""

    def __init__(
        self,
        method: str,
        fit: GaussianFit,
        temperature: float,
        reference: torch.Tensor,
        standardise: dict[str, tuple[float, float]],
        model_version: str,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method: one of {METHODS}, got {method!r}")
        self.model_version = model_version
        """The weights (``tagger-...``) whose outputs the detector was fitted on; it is
        meaningless for any other weights."""
        self.method = method
        self.fit = fit
        self.temperature = temperature
        self.reference = reference.sort().values
        self.standardise = standardise

    def raw_score(self, outputs: ModelOutputs) -> torch.Tensor:
        """The chosen raw score of each image (N,); higher = more like clothing."""
        scores = candidate_scores(outputs, self.temperature, self.fit)
        if self.method in scores:
            return scores[self.method]
        parts = self.method.split("+")
        return sum((scores[p] - self.standardise[p][0]) / self.standardise[p][1] for p in parts)

    def p_value(self, raw: torch.Tensor) -> torch.Tensor:
        """Conformal p-value (1 + rank) / (1 + #reference) in (0, 1], where rank is the number
        of reference scores <= raw, interpolated linearly between neighbouring reference
        scores (0 below the lowest, all above the highest)."""
        reference = self.reference.double().numpy()
        ranks = np.interp(raw.double().numpy(), reference, np.arange(1, len(reference) + 1), left=0.0)
        return torch.from_numpy((ranks + 1.0) / (len(reference) + 1)).float()

    def in_distribution_score(self, outputs: ModelOutputs) -> torch.Tensor:
        """The calibrated score (N,) in [0, 1]: the p-value, 0 for blank images."""
        return torch.where(outputs.blank, torch.zeros(()), self.p_value(self.raw_score(outputs)))

    def save(self, folder: Path, report: dict[str, object]) -> None:
        """Write ``ood.safetensors`` (tensors) and ``ood.json`` (method, scaling, ``report``)."""
        save_file(
            {
                k: v.contiguous()
                for k, v in {
                    "class_means": self.fit.means,
                    "precision": self.fit.precision,
                    "reference": self.reference,
                }.items()
            },
            str(folder / DETECTOR_FILE),
        )
        config = {
            "model_version": self.model_version,
            "method": self.method,
            "temperature": self.temperature,
            "standardise": {k: list(v) for k, v in self.standardise.items()},
            "report": report,
        }
        (folder / DETECTOR_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


class DetectorMismatch(ValueError):
    """A detector file that cannot serve the weights next to it (other weights, other shape)."""


def load_detector(folder: Path) -> OpenSetDetector:
    """The detector saved in ``folder``; raises ``FileNotFoundError`` when it has none and
    ``DetectorMismatch`` when its files are not for a ``FEATURE_DIM``-feature tagger or do
    not say which weights they were fitted on."""
    tensors = load_file(str(folder / DETECTOR_FILE))
    config = json.loads((folder / DETECTOR_CONFIG).read_text())
    if tensors["class_means"].shape[1] != FEATURE_DIM:
        raise DetectorMismatch(f"{folder / DETECTOR_FILE}: class means are not {FEATURE_DIM}-dimensional")
    if not isinstance(config.get("model_version"), str):
        raise DetectorMismatch(f"{folder / DETECTOR_CONFIG}: no model_version (fitted for which weights?)")
    return OpenSetDetector(
        method=config["method"],
        fit=GaussianFit(tensors["class_means"], tensors["precision"]),
        temperature=float(config["temperature"]),
        reference=tensors["reference"],
        standardise={k: (float(v[0]), float(v[1])) for k, v in config["standardise"].items()},
        model_version=config["model_version"],
    )
