"""Shared fixtures and events: the installed plugin, loaded by the engine's harness on the CPU."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from streamproc.events import AudioEvent, DerivedEvent, UploadEvent
from streamproc.testing import PluginHarness

needs_apertium = pytest.mark.skipif(shutil.which("apertium") is None, reason="needs apertium and apertium-eng-spa")


def upload(title: str = "", description: str = "", language: str = "en", n: int = 1) -> UploadEvent:
    return UploadEvent(
        id=f"e{n}",
        type="upload",
        ts=1_700_000_000_000,
        user_id="u1",
        upload_id=f"up{n}",
        title=title,
        description=description,
        language=language,
    )


def transcript(text: Any, language: Any = "en") -> DerivedEvent:
    origin = AudioEvent(id="a1", type="audio", ts=0, user_id="u1", audio_id="clip1")
    return DerivedEvent(type="transcript", plugin="speech", body={"text": text, "language": language}, origin=origin)


@pytest.fixture(scope="module")
def gru() -> PluginHarness:
    """The plugin with the GRU backend (the trained network)."""
    return PluginHarness.load("translator", {"backend": "gru"})
