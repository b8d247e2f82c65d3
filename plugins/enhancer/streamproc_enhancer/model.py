"""The super-resolution network: one FSRCNN-style sub-pixel CNN per scale (x2, x4).

Each ``SubPixelSR`` works on luma in [0, 1] at the low resolution: feature extraction
(5x5), shrinking (1x1), a few 3x3 mapping layers, expansion (1x1), then a 3x3
convolution to ``scale**2`` channels rearranged by ``PixelShuffle`` (ESPCN's sub-pixel
layer). Input luma is centred and scaled ((y - 0.5) / 0.25); the network predicts the
residual over bicubic upscaling (scaled by 0.25), so training only has to add the
missing detail. Where the input is flat (one value) across the whole receptive field,
bicubic upscaling is already exact and there is no detail to restore: the residual is
zeroed there (``flat_mask``), so flat areas (artwork backgrounds, clipped skies) come out
exactly flat instead of carrying the network's faint constant offsets.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

SCALES = (2, 4)
WEIGHTS_FILE = "enhancer.safetensors"
BICUBIC_RADIUS = 2


class SubPixelSR(nn.Module):
    """luma (N, 1, h, w) in [0, 1] -> (N, 1, h*scale, w*scale), unclamped."""

    def __init__(self, scale: int, features: int = 48, shrink: int = 24, mapping: int = 3) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(1, features, 5, padding=2), nn.PReLU(features)]
        layers += [nn.Conv2d(features, shrink, 1), nn.PReLU(shrink)]
        for _ in range(mapping):
            layers += [nn.Conv2d(shrink, shrink, 3, padding=1), nn.PReLU(shrink)]
        layers += [nn.Conv2d(shrink, features, 1), nn.PReLU(features)]
        layers += [nn.Conv2d(features, scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)
        # input pixels an output pixel depends on, each side: the body's convolutions or bicubic's
        convolutions = [layer.kernel_size[0] // 2 for layer in layers if isinstance(layer, nn.Conv2d)]
        self.receptive_radius = max(sum(convolutions), BICUBIC_RADIUS)
        with torch.no_grad():  # start close to bicubic
            layers[-2].weight.mul_(0.1)
            layers[-2].bias.zero_()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(y, scale_factor=self.scale, mode="bicubic", align_corners=False)
        detail = ~flat_mask(y, self.receptive_radius)
        gate = F.interpolate(detail.to(y.dtype), scale_factor=self.scale, mode="nearest")
        return base + 0.25 * self.body((y - 0.5) / 0.25) * gate


def flat_mask(y: torch.Tensor, radius: int) -> torch.Tensor:
    """True where every pixel within ``radius`` (a square window, clipped at the image's
    edges) has the same value: (N, 1, h, w) bool."""
    window = 2 * radius + 1
    highest = F.max_pool2d(y, window, stride=1, padding=radius)
    lowest = -F.max_pool2d(-y, window, stride=1, padding=radius)
    return highest == lowest


class Enhancer(nn.Module):
    """One ``SubPixelSR`` per scale in ``SCALES``; ``upscale(y, scale)`` picks it."""

    def __init__(self, features: int = 48, shrink: int = 24, mapping: int = 3) -> None:
        super().__init__()
        self.config = {"features": features, "shrink": shrink, "mapping": mapping}
        self.nets = nn.ModuleDict({f"x{s}": SubPixelSR(s, features, shrink, mapping) for s in SCALES})
        self.receptive_radius = max(net.receptive_radius for net in self.nets.values())

    def upscale(self, y: torch.Tensor, scale: int) -> torch.Tensor:
        """Luma (N, 1, h, w) -> (N, 1, h*scale, w*scale) clamped to [0, 1]."""
        return self.nets[f"x{scale}"](y).clamp(0.0, 1.0)


def shipped_weights_dir() -> Path:
    """The folder of the weights shipped inside the package."""
    return Path(str(resources.files("streamproc_enhancer") / "weights"))


def load_enhancer(device: torch.device | str = "cpu", weights_dir: Path | str | None = None) -> Enhancer:
    """The enhancer (shipped weights unless ``weights_dir``), eval mode, on ``device``.

    The module carries ``model_version``: ``enhancer-<first 12 hex of sha256 of weights>``.
    Raises ``FileNotFoundError`` when the folder lacks the weights or config.json.
    """
    folder = Path(weights_dir) if weights_dir is not None else shipped_weights_dir()
    path = folder / WEIGHTS_FILE
    config = json.loads((folder / "config.json").read_text())
    model = Enhancer(config["features"], config["shrink"], config["mapping"])
    model.load_state_dict(load_file(str(path)))
    model.model_version = "enhancer-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return model.to(torch.device(device)).eval()
