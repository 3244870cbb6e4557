"""The trigger probe (``bench/trigger_probe.py``) still runs, and its triggers append records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.overhead_worker import OPERATIONS
from harness.processes import ROOT

pytestmark = pytest.mark.embedded_only


def test_the_probe_times_every_operation_with_and_without_its_triggers(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.trigger_probe", "--no-count", "--rounds", "2"]
    command += ["--cpu-iterations", "20", "--results", str(tmp_path)]
    # The worker exits non-zero if the triggers appended nothing.
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    (written,) = tmp_path.glob("*-trigger-probe.json")
    cpu = json.loads(written.read_text())["cpu"]
    assert sorted(cpu["ratio"]) == sorted(OPERATIONS)
    for variant in ("plain", "trigger"):
        assert all(cpu["median_us"][variant][op] > 0 for op in OPERATIONS)
