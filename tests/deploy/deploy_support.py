"""Shared by the deployment tests: the repository's paths and the offline tools.

The tools (kustomize, promtool, streamproc-validate) come from
``deploy/tools/install-tools.sh``, which builds pinned versions from the Go module proxy
into ``$STREAMPROC_CACHE/bin`` once (see the ``tools`` fixture in conftest.py).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
INSTALL_TOOLS = DEPLOY / "tools" / "install-tools.sh"


def tool_dir() -> Path:
    return Path(os.environ.get("STREAMPROC_CACHE", Path.home() / ".cache" / "streamproc")) / "bin"


@dataclass(frozen=True)
class Tools:
    kustomize: Path
    promtool: Path
    validate: Path

    def run(
        self, tool: str, *args: str | Path, cwd: Path | None = None, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a tool; with ``check`` a non-zero exit fails the test with its output."""
        result = subprocess.run(
            [str(getattr(self, tool)), *map(str, args)],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"{tool} {' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result


def load_all(text: str) -> list[dict]:
    """Every non-empty document of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]
