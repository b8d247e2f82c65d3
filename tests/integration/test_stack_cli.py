"""`streamproc stack up|status|down`: a real stack, reported once, found by the other commands
when no address is configured, and nothing left behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from streamproc.config import RedisSettings
from streamproc.dev.stack import alive, free_ports
from streamproc.engine.keys import FEED_FIELD, RedisKeys

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


def streamproc(home: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A command run as a user who never exported the stack's addresses."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *argv],
        env={**clean, "STREAMPROC_STACK_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


MARKER_TIMEOUT_S = 60.0
"""The longest a long-running command may take to show its marker, or to stop after SIGTERM."""


def stopped_once_past(home: Path, marker: str, *argv: str, **env: str) -> str:
    """Run a long-running command as ``streamproc()`` does, wait until its output (stdout and
    stderr together) shows ``marker``, stop it with SIGTERM, and return that output. A
    command that never shows the marker is killed after ``MARKER_TIMEOUT_S``; the output
    then lacks the marker and the caller's assertion says so."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamproc", *argv],
        env={**clean, "STREAMPROC_STACK_HOME": str(home), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(MARKER_TIMEOUT_S, process.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                process.terminate()
                break
        lines.append(process.communicate(timeout=MARKER_TIMEOUT_S)[0])  # what it says while stopping
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    return "".join(lines)


def test_commands_find_the_running_stack_say_so_and_fail_in_one_line_once_it_is_down(
    tmp_path: Path, test_plugins_path: Path
) -> None:
    home = tmp_path / "stack"
    assert stack(home, "up").returncode == 0
    state = json.loads((home / "stack.json").read_text())
    found = (
        f"streamproc: using the local stack ({home / 'stack.json'}): "
        f"Kafka {state['kafka_bootstrap']}, Redis {state['redis_url']}"
    )
    try:
        got = streamproc(home, "get", "echo", "nobody")
        assert got.returncode == 1, got.stderr
        assert found in got.stderr
        assert "no echo result for key 'nobody'" in got.stderr
        # tail: one result written into a feed as the worker writes it, read back.
        record = {"event_id": "e1", "plugin": "echo", "kind": "echo", "key": "nobody", "body": {"text": "hi"}}
        feed = RedisKeys(RedisSettings().key_prefix).feed("echo")
        with redis.Redis.from_url(state["redis_url"]) as client:
            client.xadd(feed, {FEED_FIELD: json.dumps(record)})
        tailed = streamproc(home, "tail", "echo", "--from-start", "--limit", "1")
        assert tailed.returncode == 0, tailed.stderr
        assert found in tailed.stderr and tailed.stdout.startswith("[echo] echo nobody")
        # ui and worker run until stopped: each is stopped once past its connection checks.
        ui_port, worker_port = free_ports(2)
        served = stopped_once_past(home, "streamproc ui: results page on", "ui", "--port", str(ui_port))
        assert found in served and f"results page on http://127.0.0.1:{ui_port}/" in served, served
        worker = stopped_once_past(
            home,
            "streamproc: loaded echo",
            "worker",
            PYTHONPATH=str(test_plugins_path),
            STREAMPROC_ENABLED_PLUGINS='["echo"]',
            STREAMPROC_HTTP_PORT=str(worker_port),
        )
        assert found in worker and "streamproc: loaded echo in" in worker, worker
        # bench: a plugin that is not installed leaves nothing to measure, so it ends at once.
        bench = streamproc(home, "bench", "--plugins", "not-installed", "--no-mixed", "--out", str(tmp_path / "bench"))
        assert bench.returncode == 0, bench.stderr
        assert found in bench.stderr
        endpoints = json.loads((tmp_path / "bench" / "bench.json").read_text())["endpoints"]
        assert endpoints == {"kafka": state["kafka_bootstrap"], "redis": state["redis_url"]}
        produced = streamproc(home, "produce", "--demo", "2", "--no-bad")
        assert produced.returncode == 0, produced.stderr
        assert sum(json.loads(produced.stdout).values()) == 2
        assert "WARNING" not in produced.stderr and "Topic not found" not in produced.stderr
        # An address that is configured wins over the stack, and is not mentioned as found.
        configured = streamproc(home, "get", "echo", "nobody", STREAMPROC_REDIS_URL=state["redis_url"])
        assert f"Kafka {state['kafka_bootstrap']}" in configured.stderr and "Redis redis://" not in configured.stderr
    finally:
        assert stack(home, "down").returncode == 0
    after = streamproc(home, "get", "echo", "nobody")
    assert after.returncode == 2 and "Traceback" not in after.stderr
    assert (
        "Redis is not reachable at redis://127.0.0.1:6379/0" in after.stderr and "streamproc stack up" in after.stderr
    )
