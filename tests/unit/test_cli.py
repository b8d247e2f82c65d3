"""The command line: what a user sees when a tool package is missing, a setting is wrong or
a service is unreachable: one line, exit status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from streamproc.cli import _parser, _ui, main
from streamproc.dev.stack import free_ports

STARTUP_ALLOWANCE_S = 4.0
"""Python's start and imports on a busy 2-core machine, on top of the 5 s the user waits for
the connection check itself (3 s)."""


@pytest.mark.parametrize(("argv", "extra"), [(["stack", "status"], "dev"), (["bench", "--quick"], "bench")])
def test_a_command_of_a_missing_extra_names_the_extra_to_install(
    argv: list[str], extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m.startswith(f"streamproc.{extra}")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, f"streamproc.{extra}", None)  # as if not installed
    assert main(argv) == 2
    assert f"pip install 'streamproc[{extra}]'" in capsys.readouterr().err


def run_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    """``streamproc ARGV`` as a user runs it, with only ``env``'s STREAMPROC_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
    clean["STREAMPROC_STACK_HOME"] = str(Path(tempfile.gettempdir()) / "no-stack-here")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamproc", *argv],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - started


def assert_one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamproc: error: "), done.stderr
    for text in expected:
        assert text in lines[0]


def test_version_is_printed() -> None:
    done, _ = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"streamproc {version('streamproc')}"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STREAMPROC_DEVICE": "gpu"}, ("setting device: 'gpu' is not a device", "cuda")),
        ({"STREAMPROC_REDIS_URL": "http://127.0.0.1:6379"}, ("setting redis.url", "redis://")),
        ({"STREAMPROC_REDIS_URL": "redis://127.0.0.1:99999/0"}, ("setting redis.url",)),
        ({"STREAMPROC_KAFKA_BOOTSTRAP": "localhost"}, ("setting kafka.bootstrap: 'localhost' is not host:port",)),
        ({"STREAMPROC_ENABLED_PLUGINS": '["tager"]'}, ("unknown plugin name(s) enabled_plugins: 'tager'", "tagger")),
        ({"STREAMPROC_PLUGINS": '{"tager": {"options": {}}}'}, ("plugins.tager: 'tager'", "installed: ")),
    ],
)
def test_bad_settings_are_one_line_with_exit_2(env: dict[str, str], expected: tuple[str, ...]) -> None:
    done, _ = run_cli("plugins", "--no-load", env=env)
    assert_one_line_error(done, *expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line_with_exit_2() -> None:
    done, _ = run_cli("plugins", "--no-load", env={"STREAMPROC_DEVICE": "cuda"})
    assert_one_line_error(done, "'cuda' but CUDA is not available")


@pytest.mark.parametrize(
    "argv",
    [("produce", "--demo", "1"), ("dead-letters", "list"), ("worker",), ("ui", "--port", "0"), ("bench", "--quick")],
)
def test_an_unreachable_broker_is_one_line_naming_the_address_and_a_hint_within_5_s(argv: tuple[str, ...]) -> None:
    address = f"127.0.0.1:{free_ports(1)[0]}"
    done, seconds = run_cli(*argv, env={"STREAMPROC_KAFKA_BOOTSTRAP": address})
    assert_one_line_error(done, f"Kafka is not reachable at {address}", "streamproc stack up")
    assert seconds < 5 + STARTUP_ALLOWANCE_S


@pytest.mark.parametrize("argv", [("tail",), ("get", "tags", "u1"), ("ui", "--port", "0"), ("bench", "--quick")])
def test_an_unreachable_redis_is_one_line_naming_the_address_and_a_hint_within_5_s(argv: tuple[str, ...]) -> None:
    url = f"redis://127.0.0.1:{free_ports(1)[0]}/0"
    done, seconds = run_cli(*argv, env={"STREAMPROC_REDIS_URL": url})
    assert_one_line_error(done, f"Redis is not reachable at {url} (connection refused)", "STREAMPROC_REDIS_URL")
    assert seconds < 5 + STARTUP_ALLOWANCE_S


def test_replaying_dead_letters_needs_a_filter_or_all() -> None:
    done, _ = run_cli("dead-letters", "replay")
    assert_one_line_error(done, "replay needs a filter")


def test_kubernetes_service_links_do_not_stop_a_command() -> None:
    done, _ = run_cli(
        "config", env={"STREAMPROC_METRICS_SERVICE_HOST": "10.0.0.1", "STREAMPROC_METRICS_PORT": "tcp://10.0.0.1:9464"}
    )
    assert done.returncode == 0, done.stderr


def test_produce_from_a_missing_file_is_one_line_with_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "events.jsonl"
    done, _ = run_cli("produce", "--file", str(missing))
    assert_one_line_error(done, f"cannot read {missing}: No such file or directory")


@pytest.mark.parametrize("limit", ["-1", "three"])
def test_tail_refuses_a_limit_that_is_not_a_count(limit: str) -> None:
    done, _ = run_cli("tail", "--limit", limit)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "streamproc tail: error: argument --limit: " in done.stderr
    assert ("is negative: give 0 or more" if limit == "-1" else "is not a whole number") in done.stderr


def test_ui_binds_this_machine_only_by_default() -> None:
    args = _parser().parse_args(["ui"])
    assert (args.bind, args.port, args.handler) == ("127.0.0.1", 8765, _ui)
