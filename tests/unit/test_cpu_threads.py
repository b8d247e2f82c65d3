"""How many torch threads each plugin thread gets on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamproc.engine import runtime
from streamproc.engine.runtime import available_cores, cpu_thread_count


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
    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    assert cpu_thread_count(0, plugins, reserved) == expected


def test_an_explicit_thread_setting_wins() -> None:
    assert cpu_thread_count(3, plugin_threads=5) == 3


@pytest.mark.parametrize(("cpu_max", "limit"), [("400000 100000", 4), ("150000 100000", 2), ("50000 100000", 1)])
def test_a_cgroup_cpu_limit_caps_the_available_cores(tmp_path: Path, cpu_max: str, limit: int) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max + "\n")
    assert available_cores(path) == min(limit, len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("cpu_max", ["max 100000", None])
def test_without_a_cgroup_limit_every_core_in_the_affinity_mask_counts(tmp_path: Path, cpu_max: str | None) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max + "\n")
    assert available_cores(path) == len(os.sched_getaffinity(0))
