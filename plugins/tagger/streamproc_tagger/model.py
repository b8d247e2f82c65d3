"""The CNN tagger (``TaggerNet``), the seed baseline (``SeedNet``) and weight loading.

Both networks take float images (N, 1, 28, 28) in [0, 1], white object on black, as in
Fashion-MNIST, and return class logits (N, 10). ``TaggerNet.features`` is the
penultimate layer (128 values per image), reused by the artwork plugin to measure
Fréchet distances; ``TaggerNet.temperature`` is fitted on validation data so that
``softmax(logits / temperature)`` is calibrated.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

FEATURE_DIM = 128
PIXEL_MEAN = 0.2860  # Fashion-MNIST training-set pixel mean and std (inputs in [0, 1])
PIXEL_STD = 0.3530
WEIGHTS_FILE = "model.safetensors"


def _conv_block(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class TaggerNet(nn.Module):
    """Conv-BN-ReLU x4 (32, 64, 64, 128 channels; two 2x2 max-pools) -> Dense 128 -> 10."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_block(1, 32),
            nn.MaxPool2d(2),
            *_conv_block(32, 64),
            *_conv_block(64, 64),
            nn.MaxPool2d(2),
            *_conv_block(64, 128),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(128 * 7 * 7, FEATURE_DIM, bias=False),
            nn.BatchNorm1d(FEATURE_DIM),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_DIM, num_classes))
        self.register_buffer("temperature", torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (N, 128) of images (N, 1, 28, 28) in [0, 1]."""
        return self.body((x - PIXEL_MEAN) / PIXEL_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Uncalibrated class logits (N, 10)."""
        return self.head(self.features(x))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities (N, 10): softmax of logits / temperature."""
        return torch.softmax(self(x) / self.temperature, dim=1)


class SeedNet(nn.Module):
    """The seed's Keras example, layer for layer: Conv32 -> pool -> Conv64 -> pool -> 64 -> 10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 5 * 5, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10) of images (N, 1, 28, 28) in [0, 1]."""
        return self.net(x)


def shipped_weights_dir() -> Path:
    """The folder of the weights shipped inside the package."""
    return Path(str(resources.files("streamproc_tagger") / "weights"))


def weights_version(path: Path) -> str:
    """``tagger-<first 12 hex of the sha256 of the safetensors file>``."""
    return "tagger-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def load_tagger(device: torch.device | str = "cpu", weights_dir: Path | str | None = None) -> TaggerNet:
    """Load the tagger (shipped weights unless ``weights_dir``), in eval mode on ``device``.

    The returned module carries ``model_version`` (see ``weights_version``). Raises
    ``FileNotFoundError`` when the weights are missing.
    """
    folder = Path(weights_dir) if weights_dir is not None else shipped_weights_dir()
    path = folder / WEIGHTS_FILE
    config = json.loads((folder / "config.json").read_text())
    model = TaggerNet(num_classes=config["num_classes"], dropout=config["dropout"])
    model.load_state_dict(load_file(str(path)))
    model.model_version = weights_version(path)
    return model.to(torch.device(device)).eval()
