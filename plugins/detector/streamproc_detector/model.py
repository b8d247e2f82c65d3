"""The detector: a small anchor-free single-shot CNN (CenterNet-style) over luma scenes.

``ItemDetector`` maps a luma image (N, 1, H, W) in [0, 1] (H, W multiples of 8) to, on
a grid of stride ``STRIDE``: a centre heatmap per class (logits, (N, C, H/4, W/4)), the
box size (w, h in grid cells) and the sub-cell centre offset at each cell. The backbone
downsamples to stride 8, one upsampling step with a stride-4 skip connection gives the
head's features. ``decode`` takes local maxima of the heatmap (3x3), converts them to
boxes in pixels, and applies class-aware NMS.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from streamproc_detector.boxes import nms

STRIDE = 4
NUM_CLASSES = 10
WEIGHTS_FILE = "detector.safetensors"


def _block(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)
    )


class ItemDetector(nn.Module):
    """luma (N, 1, H, W) -> (heatmap logits (N, C, H/4, W/4), size (N, 2, ..), offset (N, 2, ..))."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.stride4 = nn.Sequential(_block(1, width // 2, 2), _block(width // 2, width, 2), _block(width, width))
        self.stride8 = nn.Sequential(
            _block(width, 2 * width, 2), _block(2 * width, 2 * width), _block(2 * width, 2 * width)
        )
        self.fuse = _block(3 * width, 2 * width)
        self.heat = nn.Sequential(_block(2 * width, width), nn.Conv2d(width, NUM_CLASSES, 1))
        self.size = nn.Sequential(_block(2 * width, width), nn.Conv2d(width, 2, 1))
        self.offset = nn.Sequential(_block(2 * width, width), nn.Conv2d(width, 2, 1))
        nn.init.constant_(self.heat[-1].bias, -2.19)  # prior of 0.1 at start (CenterNet)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = self.stride4((x - 0.5) / 0.25)
        high = self.stride8(low)
        features = self.fuse(torch.cat([low, F.interpolate(high, scale_factor=2, mode="nearest")], dim=1))
        return self.heat(features), self.size(features), self.offset(features)


@dataclass(frozen=True)
class Detections:
    """One image's detections: boxes (K, 4) in pixels [x0, y0, x1, y1), scores (K,), labels (K,)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def decode(
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    min_score: float,
    max_detections: int = 20,
    nms_iou: float = 0.5,
) -> list[Detections]:
    """Per image: peaks of the class heatmaps (3x3 local maxima, top ``max_detections``,
    score >= ``min_score``) as boxes in pixels, then class-aware NMS at ``nms_iou``."""
    scores = torch.sigmoid(heat.float())
    peaks = scores * (F.max_pool2d(scores, 3, stride=1, padding=1) == scores)
    batch, classes, height, width = peaks.shape
    out = []
    for n in range(batch):
        top, flat = peaks[n].flatten().topk(min(max_detections, classes * height * width))
        chosen = top >= min_score
        top, flat = top[chosen], flat[chosen]
        labels = flat // (height * width)
        cell = flat % (height * width)
        ys, xs = (cell // width).float(), (cell % width).float()
        cx = (xs + offset[n, 0].flatten()[cell].float()) * STRIDE
        cy = (ys + offset[n, 1].flatten()[cell].float()) * STRIDE
        w = size[n, 0].flatten()[cell].float().clamp(min=0) * STRIDE
        h = size[n, 1].flatten()[cell].float().clamp(min=0) * STRIDE
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1).cpu()
        keep = nms(boxes, top.cpu(), labels.cpu(), nms_iou) if len(top) else torch.zeros(0, dtype=torch.long)
        out.append(Detections(boxes[keep], top.cpu()[keep], labels.cpu()[keep]))
    return out


def shipped_weights_dir() -> Path:
    """The folder of the weights shipped inside the package."""
    return Path(str(resources.files("streamproc_detector") / "weights"))


def load_detector(device: torch.device | str = "cpu", weights_dir: Path | str | None = None) -> ItemDetector:
    """The detector (shipped weights unless ``weights_dir``), eval mode, on ``device``;
    ``model_version`` is ``detector-<first 12 hex of sha256 of weights>``. Raises
    ``FileNotFoundError`` when the folder lacks the weights or config.json."""
    folder = Path(weights_dir) if weights_dir is not None else shipped_weights_dir()
    path = folder / WEIGHTS_FILE
    config = json.loads((folder / "config.json").read_text())
    model = ItemDetector(config["width"])
    model.load_state_dict(load_file(str(path)))
    model.model_version = "detector-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return model.to(torch.device(device)).eval()
