"""benchmarks/bench.py: the speed benchmark runs every kind of measurement it offers on a tiny preset."""

from __future__ import annotations

import json
import math
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench  # noqa: E402


@pytest.mark.slow
def test_bench_times_a_step_an_epoch_chunk_and_an_ensemble_of_a_stage(tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert bench.main(["--presets", "tiny", "--stages", "2", "--epoch-stages", "2", "--steps", "1", "--ensemble", "2",
                       "--ensemble-preset", "tiny", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    (row,) = result["rows"]
    assert (row["preset"], row["stage"], row["chunk"]) == ("tiny", 2, 1)
    for figure in ("step_ms", "epoch_ms", "flops", "matmul_gflops_per_s"):
        assert math.isfinite(row[figure]) and row[figure] > 0, figure
    cost = result["ensemble"]["stages"]["2"]
    assert cost["one_ms"] > 0 and cost["ensemble_ms"] > 0
    assert cost["ratio"] == pytest.approx(cost["ensemble_ms"] / cost["one_ms"])
    assert "ensemble tiny stage 2: 1 member" in capsys.readouterr().out
