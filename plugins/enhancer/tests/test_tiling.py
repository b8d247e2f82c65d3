"""Tiles cover the image with the promised overlap, and blending refuses overlaps too small to be exact."""

from __future__ import annotations

import itertools

import pytest
import torch
from streamproc_enhancer.tiling import axis_starts, blend, tile_grid


@pytest.mark.parametrize("length", [1, 64, 65, 100, 120, 300, 1000])
def test_tiles_cover_the_axis_from_edge_to_edge_sharing_at_least_the_overlap(length: int) -> None:
    starts = axis_starts(length, 64, 16)
    assert starts[0] == 0 and starts[-1] + min(64, length) == length
    assert all(first + 64 - second >= 16 for first, second in itertools.pairwise(starts))


def test_blending_equal_tiles_gives_the_same_values_everywhere() -> None:
    tiles = tile_grid(100, 150, 64, 16)
    outputs = [torch.full((1, 2 * t.height, 2 * t.width), 0.25) for t in tiles]
    assert torch.equal(blend(outputs, tiles, 100, 150, 2, 6), torch.full((1, 200, 300), 0.25))


def test_an_overlap_within_twice_the_receptive_radius_is_refused() -> None:
    tiles = tile_grid(116, 116, 64, 12)  # two tiles a side, sharing exactly 12 pixels
    outputs = [torch.zeros((1, t.height, t.width)) for t in tiles]
    with pytest.raises(ValueError, match="share 12 pixels"):
        blend(outputs, tiles, 116, 116, 1, 6)
