"""benchmarks/profile_step.py: operations sorted by kind from compiled programs, concurrency, and a real run."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import profile_step  # noqa: E402


def test_operations_name_the_arithmetic_of_a_compiled_program():
    def network(x, kernel, dense):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return h.reshape(h.shape[0], -1) @ dense

    args = (jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), jnp.ones((8 * 8 * 4, 5)))
    text = jax.jit(network).lower(*args).compile().as_text()
    found = profile_step.operations(text)
    kinds = {op.kind for op in found.values()}
    assert {"convolution", "dot"} <= kinds
    convolutions = [op for op in found.values() if op.kind == "convolution"]
    assert any("f32[2,8,8,4]" in op.description and "size=3x3" in op.description for op in convolutions)
    assert set(kinds) <= set(profile_step.KINDS)


def test_concurrency_shares_the_traced_span():
    events = [profile_step.Event("a", "t0", 0, 10), profile_step.Event("b", "t1", 5, 10)]
    shares = profile_step.concurrency(events)
    assert shares[1] == pytest.approx(10 / 15)
    assert shares[2] == pytest.approx(5 / 15)
    assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_profile_of_a_tiny_stage_runs_and_accounts_for_its_operations():
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "profile_step.py"), "--preset", "tiny", "--stage", "2",
         "--steps", "1", "--top", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.split()}
    by_kind = {kind: float(rows[kind][1]) for kind in profile_step.KINDS}
    assert by_kind["convolution"] > 0 and by_kind["dot"] > 0
    # Every figure is printed to 0.1, so the kinds' sum may miss the total by half of that per figure.
    assert float(rows["all"][1]) == pytest.approx(sum(by_kind.values()), abs=0.05 * (len(by_kind) + 1) + 1e-9)
    assert "operations running at once" in result.stdout
