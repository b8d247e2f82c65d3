"""The speech plugin fixture: found through its entry point and loaded on CPU, once."""

from __future__ import annotations

import pytest

from streamproc.plugin import Plugin
from streamproc.registry import load_plugin


@pytest.fixture(scope="session")
def plugin() -> Plugin:
    """The speech plugin, found through its entry point and loaded on CPU."""
    return load_plugin("speech")
