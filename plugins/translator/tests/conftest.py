"""Shared fixtures: the plugin found through its entry point, loaded on the CPU."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch

from streamproc.plugin import ENTRY_POINT_GROUP, LoadContext, Plugin


def load_translator(**options: object) -> Plugin:
    """Load the ``translator`` plugin through its entry point with ``options``."""
    (entry,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "translator"]
    plugin = entry.load()()
    plugin.load(LoadContext(device=torch.device("cpu"), options=options))
    return plugin


@pytest.fixture(scope="module")
def translator() -> Plugin:
    return load_translator()
