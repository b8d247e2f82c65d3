"""Image-quality figures on uint8 luma: PSNR, SSIM, and bootstrap confidence intervals.

Both metrics skip a border of ``border`` pixels (the usual super-resolution protocol:
the outermost pixels lack context for every method alike). SSIM is Wang et al. (2004)
with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F


def _crop(pixels: np.ndarray, border: int) -> np.ndarray:
    return pixels[border:-border, border:-border] if border else pixels


def psnr(reference: np.ndarray, estimate: np.ndarray, border: int = 0) -> float:
    """PSNR in dB of two uint8 arrays of one shape (capped at 100 dB for identical images)."""
    diff = _crop(reference, border).astype(np.float64) - _crop(estimate, border).astype(np.float64)
    mse = float(np.mean(diff**2))
    return 100.0 if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(reference: np.ndarray, estimate: np.ndarray, border: int = 0) -> float:
    """Mean SSIM of two uint8 (H, W) arrays of one shape, at least 11 x 11 after the border."""
    x = torch.from_numpy(_crop(reference, border).astype(np.float64))[None, None]
    y = torch.from_numpy(_crop(estimate, border).astype(np.float64))[None, None]
    axis = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(axis**2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def cluster_bootstrap_ci(
    values: Sequence[float], clusters: Sequence[str], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of the mean, resampling whole clusters (crops of one
    source image are not independent) with replacement."""
    by_cluster: dict[str, list[float]] = {}
    for value, cluster in zip(values, clusters, strict=True):
        by_cluster.setdefault(cluster, []).append(value)
    sums = np.array([sum(v) for v in by_cluster.values()])
    counts = np.array([len(v) for v in by_cluster.values()])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(resamples, len(sums)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)
