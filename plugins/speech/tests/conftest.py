"""The speech plugin fixture: found through its entry point and loaded on CPU, once."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch

from streamproc.plugin import ENTRY_POINT_GROUP, LoadContext, Plugin


@pytest.fixture(scope="session")
def plugin() -> Plugin:
    """The speech plugin, found through its entry point and loaded on CPU."""
    (entry,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "speech"]
    instance = entry.load()()
    instance.load(LoadContext(device=torch.device("cpu")))
    return instance
