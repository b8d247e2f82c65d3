"""The command line: what a user sees when a tool package is not installed."""

from __future__ import annotations

import sys

import pytest

from streamproc.cli import main


@pytest.mark.parametrize(("argv", "extra"), [(["stack", "status"], "dev"), (["bench", "--quick"], "bench")])
def test_a_command_of_a_missing_extra_names_the_extra_to_install(
    argv: list[str], extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m.startswith(f"streamproc.{extra}")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, f"streamproc.{extra}", None)  # as if not installed
    assert main(argv) == 2
    assert f"pip install 'streamproc[{extra}]'" in capsys.readouterr().err
