"""Shared fixtures: the plugin found through its entry point, loaded on the CPU with the GRU backend."""

from __future__ import annotations

import pytest

from streamproc.plugin import Plugin
from streamproc.registry import load_plugin


@pytest.fixture(scope="module")
def translator() -> Plugin:
    return load_plugin("translator", {"backend": "gru"})
