"""`streamproc stack up|status|down`: a real stack, reported once, and nothing left behind."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamproc.dev.stack import alive

pytestmark = pytest.mark.integration


def stack(home: Path, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamproc", "stack", action, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_stack_up_reports_a_running_stack_and_down_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    first = stack(home, "up")
    assert first.returncode == 0, first.stderr
    assert "Kafka bootstrap: 127.0.0.1:" in first.stdout and "Redis URL:       redis://127.0.0.1:" in first.stdout
    state = json.loads((home / "stack.json").read_text())
    kafka_port = int(state["kafka_bootstrap"].rsplit(":", 1)[1])
    redis_port = int(state["redis_url"].rsplit(":", 1)[1].split("/")[0])
    try:
        assert listening(kafka_port) and listening(redis_port)
        second = stack(home, "up")
        assert "stack already running" in second.stderr
        assert json.loads((home / "stack.json").read_text()) == state, "a second up started another stack"
        assert stack(home, "status").returncode == 0
    finally:
        down = stack(home, "down")
    assert down.returncode == 0 and "stack stopped" in down.stdout
    assert not alive(state["kafka_pid"]) and not alive(state["redis_pid"])
    assert not listening(kafka_port) and not listening(redis_port)
    assert stack(home, "status").returncode == 1
