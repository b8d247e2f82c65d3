"""The class-conditional DCGAN: ``Generator`` (shipped) and ``Discriminator`` (training only).

The generator maps a latent vector z (``LATENT_DIM`` standard normals) and a class id
to a 28x28 image in [-1, 1] (white object on black, like Fashion-MNIST): the class
embedding is concatenated to z, a linear layer makes a 7x7 map, and two transposed
convolutions upsample it to 14x14 and 28x28. The discriminator is a spectrally
normalised CNN with a projection head (Miyato & Koyama 2018): its score is
``psi(h) + <embed(y), h>`` for the image features h.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

LATENT_DIM = 64
NATIVE_SIZE = 28
"""Side in pixels of what the generator draws."""
NUM_CLASSES = 10
WEIGHTS_FILE = "generator.safetensors"


class Generator(nn.Module):
    """(z (N, LATENT_DIM), y (N,)) -> images (N, 1, 28, 28) in [-1, 1].

    ``z`` holds standard normals; the generator draws at ``latent_scale * z``. Training uses
    1.0; the shipped model's scale (``config.json``) is chosen on validation samples to
    trade variety against class fidelity (the truncation trick, Brock et al. 2019), and the
    model card measures the generator at that scale."""

    def __init__(self, width: int = 64, embed_dim: int = 32, latent_scale: float = 1.0) -> None:
        super().__init__()
        self.width = width
        self.latent_scale = latent_scale
        self.embed = nn.Embedding(NUM_CLASSES, embed_dim)
        self.project = nn.Sequential(
            nn.Linear(LATENT_DIM + embed_dim, 2 * width * 7 * 7, bias=False),
            nn.BatchNorm1d(2 * width * 7 * 7),
            nn.ReLU(inplace=True),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z * self.latent_scale, self.embed(y)], dim=1))
        return self.upsample(h.view(-1, 2 * self.width, 7, 7))


class Discriminator(nn.Module):
    """(images (N, 1, 28, 28) in [-1, 1], y (N,)) -> realness scores (N,).

    ``classify`` gives auxiliary class logits from the same features (AC-GAN term).
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(1, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        features = 2 * width * 7 * 7
        self.score = spectral_norm(nn.Linear(features, 1))
        self.embed = spectral_norm(nn.Embedding(NUM_CLASSES, features))
        self.classifier = spectral_norm(nn.Linear(features, NUM_CLASSES))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scores(self.body(x), y)

    def scores(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Realness scores from body features ``h``: linear term + class projection."""
        return self.score(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 pixels (what the PNGs hold)."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def shipped_weights_dir() -> Path:
    """The folder of the weights shipped inside the package."""
    return Path(str(resources.files("streamproc_artwork") / "weights"))


def load_generator(device: torch.device | str = "cpu", weights_dir: Path | str | None = None) -> Generator:
    """Load the generator (shipped weights unless ``weights_dir``), eval mode, on ``device``.

    The module carries ``model_version``: ``artwork-<first 12 hex of the sha256 of the
    weights and config.json>`` (the config holds the latent scale it draws at).
    """
    folder = Path(weights_dir) if weights_dir is not None else shipped_weights_dir()
    path = folder / WEIGHTS_FILE
    config_bytes = (folder / "config.json").read_bytes()
    config = json.loads(config_bytes)
    model = Generator(config["width"], config["embed_dim"], config.get("latent_scale", 1.0))
    model.load_state_dict(load_file(str(path)))
    model.model_version = "artwork-" + hashlib.sha256(path.read_bytes() + config_bytes).hexdigest()[:12]
    return model.to(torch.device(device)).eval()
