"""Fixtures of the deployment tests: the offline tools, installed on first use.

The ``tools`` fixture runs ``deploy/tools/install-tools.sh`` (a no-op when the pinned
tools are there) so that these tests never depend on a step someone may have skipped.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from deploy_support import INSTALL_TOOLS, Tools, tool_dir


@pytest.fixture(scope="session")
def tools() -> Tools:
    """The offline tools, installed or brought up to date by install-tools.sh."""
    bin_dir = tool_dir()
    found = Tools(bin_dir / "kustomize", bin_dir / "promtool", bin_dir / "streamproc-validate")
    if shutil.which("go") is None:
        missing = [p.name for p in (found.kustomize, found.promtool, found.validate) if not p.exists()]
        if missing:
            pytest.skip(f"Go is not installed, so deploy/tools/install-tools.sh cannot build {', '.join(missing)}")
        return found
    result = subprocess.run(["bash", str(INSTALL_TOOLS)], capture_output=True, text=True, timeout=3000)
    if result.returncode != 0:
        pytest.fail(f"deploy/tools/install-tools.sh failed:\n{result.stdout}\n{result.stderr}")
    return found
