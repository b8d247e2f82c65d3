"""Box geometry: IoU and class-aware non-maximum suppression, on [x0, y0, x1, y1) boxes."""

from __future__ import annotations

import torch


def iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4): (N, M)."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS per label (highest score first): a box is
    dropped when it overlaps a kept box of its label with IoU above ``threshold``."""
    order = torch.argsort(scores, descending=True)
    keep: list[int] = []
    overlaps = iou_matrix(boxes, boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    for index in order.tolist():
        if suppressed[index]:
            continue
        keep.append(index)
        suppressed |= (overlaps[index] > threshold) & (labels == labels[index])
    return torch.tensor(keep, dtype=torch.long)
