"""How many torch threads each plugin thread gets on CPU."""

from __future__ import annotations

import pytest

from streamproc import runtime
from streamproc.runtime import cpu_thread_count


@pytest.mark.parametrize(
    ("cores", "plugins", "reserved", "expected"),
    [
        (2, 1, 1, 1),  # one core for the event loop, one for the model
        (2, 5, 1, 1),  # never below one
        (16, 5, 1, 3),  # 15 cores shared by five plugin threads
        (64, 1, 1, 8),  # at most 8
        (2, 1, 0, 2),  # offline compute limit: every core
    ],
)
def test_auto_threads_leave_a_core_to_the_event_loop_and_share_the_rest(
    monkeypatch: pytest.MonkeyPatch, cores: int, plugins: int, reserved: int, expected: int
) -> None:
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: cores)
    assert cpu_thread_count(0, plugins, reserved) == expected


def test_an_explicit_thread_setting_wins() -> None:
    assert cpu_thread_count(3, plugin_threads=5) == 3
