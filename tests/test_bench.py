"""benchmarks/bench.py: the speed benchmark times a stage's single step and its epoch chunk on a tiny preset."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench  # noqa: E402


@pytest.mark.slow
def test_bench_times_a_step_and_an_epoch_chunk_of_a_stage(tmp_path, capsys):
    # The ensemble timing (--ensemble K) reuses the chunk's compile and timing measured here; two more trainers
    # to build and programs to compile would double the test's time.
    report = tmp_path / "bench.json"
    assert bench.main(["--presets", "tiny", "--stages", "2", "--epoch-stages", "2", "--steps", "1", "--ensemble", "0",
                       "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    (row,) = result["rows"]
    assert (row["preset"], row["stage"], row["chunk"]) == ("tiny", 2, 1)
    for figure in ("step_ms", "epoch_ms", "flops", "matmul_gflops_per_s"):
        assert math.isfinite(row[figure]) and row[figure] > 0, figure
    assert result["ensemble"] is None
    assert capsys.readouterr().out.splitlines()[-3].split()[:2] == ["tiny", "2"]


@pytest.mark.parametrize("argument, code", [("--help", 0), ("--epochs", 1)])
def test_the_gpu_session_script_only_describes_itself_when_given_arguments(
    argument: str, code: int, tmp_path: Path
) -> None:
    # Its settings are environment variables; an argument must never start a session (and its training run).
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_session.sh"), argument], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "OUT": str(tmp_path / "out")})
    assert done.returncode == code and "GPU session" in done.stdout
    assert not (tmp_path / "out").exists()
