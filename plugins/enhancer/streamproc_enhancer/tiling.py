"""Overlapping tiles of a large image and the seamless blending of their upscaled outputs.

An image larger than a tile is cut into tiles of at most ``side`` x ``side`` pixels that
overlap their neighbours by at least ``overlap`` pixels, spread evenly from edge to edge
of the image. Each tile is upscaled alone;
``blend`` puts the outputs back together with weights that ramp linearly across each
overlap.

Why the result equals the whole-image output: an output pixel of the network depends on
the input pixels within ``radius`` of it (its receptive field). A tile's output is
therefore exact wherever the pixel is at least ``radius`` input pixels from the tile's
inner edges (its edges on the image's border see the same padding as the whole image).
A tile's weight is zero within ``radius`` of an inner edge and ramps from 0 to 1 between
``radius`` and ``overlap - radius``, so every weighted pixel is an exact one and the
blend of exact values is exact (up to floating-point rounding). ``overlap`` must be at
least ``2 * radius + 1`` for the ramp to exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tile:
    """A rectangle of the input image: ``top``/``left`` corner, ``height`` x ``width``."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width


def axis_starts(length: int, side: int, overlap: int) -> list[int]:
    """Starts of the fewest tiles of ``side`` covering ``length`` with neighbours sharing
    at least ``overlap``, spread evenly (one tile when ``length <= side``; the first starts
    at 0, the last ends at ``length``). ``ValueError`` unless ``side > overlap``."""
    if side <= overlap:
        raise ValueError(f"tile side {side} must exceed the overlap {overlap}")
    if length <= side:
        return [0]
    gaps = -(-(length - side) // (side - overlap))  # tiles - 1
    return [i * (length - side) // gaps for i in range(gaps + 1)]


def tile_grid(height: int, width: int, side: int, overlap: int) -> list[Tile]:
    """The tiles of a ``height`` x ``width`` image, row by row (see ``axis_starts``)."""
    return [
        Tile(top, left, min(side, height), min(side, width))
        for top in axis_starts(height, side, overlap)
        for left in axis_starts(width, side, overlap)
    ]


def blend(
    outputs: Sequence[torch.Tensor], tiles: Sequence[Tile], height: int, width: int, scale: int, radius: int
) -> torch.Tensor:
    """The (C, height*scale, width*scale) image from each tile's upscaled ``outputs``
    ((C, tile.height*scale, tile.width*scale) each), blended across overlaps.
    ``ValueError`` when neighbouring tiles share ``2 * radius`` pixels or fewer."""
    channels = outputs[0].shape[0]
    total = torch.zeros((channels, height * scale, width * scale), dtype=torch.float64)
    weights = torch.zeros((1, height * scale, width * scale), dtype=torch.float64)
    rows, cols = sorted({t.top for t in tiles}), sorted({t.left for t in tiles})
    for output, tile in zip(outputs, tiles, strict=True):
        row_weight = _axis_weight(rows, tile.top, tile.height, scale, radius)
        col_weight = _axis_weight(cols, tile.left, tile.width, scale, radius)
        weight = row_weight[:, None] * col_weight[None, :]
        area = (slice(None), slice(tile.top * scale, tile.bottom * scale), slice(tile.left * scale, tile.right * scale))
        total[area] += output.double() * weight
        weights[area] += weight
    return (total / weights).to(outputs[0].dtype)


def _axis_weight(starts: list[int], start: int, size: int, scale: int, radius: int) -> torch.Tensor:
    """One tile's weights along an axis whose tiles begin at ``starts`` (all of ``size``)."""
    index = starts.index(start)
    centres = start + (torch.arange(size * scale, dtype=torch.float64) + 0.5) / scale
    weight = torch.ones_like(centres)
    shares = [first + size - second for first, second in itertools.pairwise(starts)]
    if any(shared <= 2 * radius for shared in shares):
        raise ValueError(f"tiles share {min(shares)} pixels: no exact blend within a radius of {radius}")
    if index > 0:  # the previous tile overlaps [start, previous end)
        shared = starts[index - 1] + size - start
        weight = weight * ((centres - start - radius) / (shared - 2 * radius)).clamp(0, 1)
    if index < len(starts) - 1:  # the next tile overlaps [next start, end)
        shared = start + size - starts[index + 1]
        weight = weight * ((start + size - radius - centres) / (shared - 2 * radius)).clamp(0, 1)
    return weight
