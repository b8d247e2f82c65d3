"""The prepared GPU check runs end to end; here on the CPU (``--device cpu``), its dry-run mode.

CUDA itself cannot be exercised on a machine without a GPU; this proves the script's
every other part: inputs, plugin loading from the repository copy, the agreement check,
the batch-size sweep, the in-process pipeline and the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "gpu" / "gpu_check.py"


def test_gpu_check_dry_run_measures_compares_and_reports(tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--device", "cpu"]
    command += ["--plugins", "tagger", "--budget-s", "60"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["machine"]["device"] == "cpu"
    tagger = report["plugins"]["tagger"]
    assert tagger["events"] > 0 and tagger["cpu_fp32_events_per_s"] > 0
    fp32 = tagger["fp32"]
    assert fp32["agreement"]["agreement_rate"] == 1.0  # the CPU against itself: identical
    assert fp32["agreement"]["result"] == "PASS"
    assert fp32["events_per_s"] > 0 and all(point["events_per_s"] > 0 for point in fp32["sweep"])
    assert "device: cpu" in done.stdout  # the device name is printed
