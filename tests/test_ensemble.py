"""Ensembles: K members trained side by side equal K separately trained models, with members and batches split
over several devices and processes."""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import (
    REPO, TINY_ARGS, assert_trees_identical, flat_arrays, run_processes, run_script, run_train_py, xla_environment,
)
from vaegan_jax import cli
from vaegan_jax import config as config_lib
from vaegan_jax import load_run
from vaegan_jax.checkpoints import CheckpointStore
from vaegan_jax.models import NETWORKS, build_networks, example_inputs
from vaegan_jax.rng import member_keys
from vaegan_jax.steps import create_members, stack_members, take_member
from vaegan_jax.runs import RunPaths

# Members and single runs execute the same convolutions; what differs is how XLA fuses the rest of the
# program around the member axis: float32 roundings (relative 1e-7) in a step. Training amplifies them
# quickly, because RMSProp's first steps move each parameter by about +-lr whatever the gradient's size,
# so a gradient element near zero takes its sign from rounding: one step of every stage agreed to a
# relative distance below 1e-4 on one CPU and 1.6e-4 on another (batches of 5), and a tiny run of one step
# per stage to 2e-5 (2026-12-01), while another seed is at ~1. Two kinds of arrays are rounding
# alone and are left out: the bias of a layer that feeds a BatchNorm, which the BatchNorm subtracts again
# (its gradient is zero but for rounding, so RMSProp walks it at random), and the running means of those
# BatchNorms (every one of these networks'), which add that walk up.
# One step of stages I and II: stage III's step is the same step builder's, for networks that stage I
# already trains under the same layout, and its compilation cost each process 20 s at the default level.
EPOCHS = ["--epochs", "1,1,0"]
# One batch of all 20 fitting trials, so an epoch is one step; it splits over 2 or 4 devices, where the tiny
# preset's 5 would not.
BATCH = ["--batch-size", "20"]
# A member's programs fuse differently from a lone model's, and the two runs below split their batches
# differently (2 shards in each of two processes, 4 in one): float roundings alone, which training amplifies (above).
# The runs compile at the tests' quick level, whose reductions are plain sequential sums: the worst distance,
# a BatchNorm bias of D, was 1.5e-5 (5.3e-5 at XLA's default level; 2.5e-3 on another data file, 2026-12-01).
RUN_DISTANCE = 1e-2
OTHER_SEED_DISTANCE = 0.3


def _relative_distance(actual: np.ndarray, expected: np.ndarray) -> float:
    return 0.0 if np.array_equal(actual, expected) else float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@functools.cache
def _cancelled_biases(model: config_lib.ModelConfig) -> frozenset[str]:
    """Paths (as `flat_arrays` names them in states) of the biases a BatchNorm cancels: the training-mode
    outputs of their network do not move with them (gradients below 1e-4 of the network's largest). D's
    features count for nothing: the losses read them only as the difference of two images' features."""
    networks, inputs = build_networks(model), example_inputs(model, n_voxels=3, batch=4)
    cancelled = set()
    for name in NETWORKS:
        x = jax.random.normal(jax.random.key(1), inputs[name].shape)
        variables = jax.jit(functools.partial(networks[name].init, train=False))(jax.random.key(0), x)

        def readout(params: Any) -> jax.Array:
            outputs, _ = networks[name].apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            outputs = outputs[0] if name == "discriminator" else outputs
            return sum(jnp.sum(jnp.sin(3.0 * output)) for output in jax.tree.leaves(outputs))

        grads = flat_arrays(jax.jit(jax.grad(readout))(variables["params"]))
        largest = max(float(np.abs(g).max()) for g in grads.values())
        cancelled |= {f"['{name}'].params{path}" for path, g in grads.items()
                      if path.endswith("['bias']") and np.abs(g).max() < 1e-4 * largest}
    return frozenset(cancelled)


def _weights(states: Any, model: config_lib.ModelConfig) -> dict[str, np.ndarray]:
    """Every parameter and BatchNorm statistic of states, flattened, less the biases that a BatchNorm cancels
    and the running means that add them up."""
    cancelled = _cancelled_biases(model)
    return {path: value for path, value in flat_arrays(states).items()
            if (".params" in path or ".batch_stats" in path) and path not in cancelled and not path.endswith("['mean']")}


def _run_weights(run: Path, k: int) -> dict[str, np.ndarray]:
    """Member k's `_weights` at the run's newest checkpoint."""
    store = CheckpointStore(RunPaths(run).checkpoints, read_only=True)
    latest = store.latest_step()
    store.close()
    trained = load_run(run, latest)
    return _weights(take_member(trained.states, k), trained.config.model)


def _worst_distance(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> tuple[str, float]:
    assert actual.keys() == expected.keys()
    distances = {path: _relative_distance(actual[path], expected[path]) for path in expected}
    worst = max(distances, key=distances.get)
    return worst, distances[worst]


def _run_args(data_file: Path, out: Path, seed: int, ensemble: int = 1) -> list[str]:
    return [*TINY_ARGS, *EPOCHS, *BATCH, "--data", str(data_file), "--out", str(out), "--seed", str(seed),
            "--ensemble", str(ensemble)]


@pytest.fixture(scope="module")
def ensemble_run(data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run of two members, seeds 3 and 4, trained by two processes of two devices each: members and
    batches split at once (2 member groups x 2 batch shards). One process with four devices lays out the
    same mesh, so it needs no run of its own."""
    out = tmp_path_factory.mktemp("ensemble") / "run"
    done = run_processes("train.py", _run_args(data_file, out, 3, ensemble=2), n_processes=2, devices_each=2)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    assert ("members  2 (seeds 3..4) on 4 of 4 device(s): 2 member group(s) x 2 batch shard(s), 2 processes"
            in done[0].stdout)
    assert "best checkpoint" in done[0].stdout and "best checkpoint" not in done[1].stdout  # process 0 alone reports
    return out


@pytest.fixture(scope="module")
def alone_run(data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run of one model, seed 4 (the ensemble's second member, whose key is not the run's own), its
    batches split over 4 devices."""
    out = tmp_path_factory.mktemp("alone") / "seed4"
    done = run_train_py(_run_args(data_file, out, 4), env=xla_environment(4))
    assert done.returncode == 0, done.stderr
    assert "members  1 (seeds 4..4) on 4 of 4 device(s): 1 member group(s) x 4 batch shard(s)" in done.stdout
    return out


@pytest.mark.slow
def test_each_member_of_a_run_is_the_model_trained_alone_with_its_seed(ensemble_run: Path, alone_run: Path) -> None:
    worst = _worst_distance(_run_weights(ensemble_run, 1), _run_weights(alone_run, 0))
    assert worst[1] < RUN_DISTANCE, worst
    # The members are different models, not one model twice.
    first, second = _run_weights(ensemble_run, 0), _run_weights(ensemble_run, 1)
    assert all(_relative_distance(first[p], second[p]) > OTHER_SEED_DISTANCE for p in first if p.endswith("['kernel']"))


@pytest.mark.slow
def test_an_ensemble_reports_its_members_and_their_average(ensemble_run: Path, tmp_path: Path) -> None:
    report = json.loads((ensemble_run / "metrics.json").read_text())
    assert [member["seed"] for member in report["members"]] == [3, 4]
    assert all(-1 <= member["test"]["pcc_fmri"] <= 1 for member in report["members"])
    done = run_script("eval.py", ["--ckpt", str(ensemble_run), "--out", str(tmp_path / "eval"), "--baselines", "mean"])
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["model", "model-seed3", "model-seed4", "mean"]
    arrays = np.load(tmp_path / "eval" / "reconstructions.npz")
    np.testing.assert_allclose(arrays["rec_model"], (arrays["rec_model-seed3"] + arrays["rec_model-seed4"]) / 2, atol=1e-6)
    assert not np.allclose(arrays["rec_model-seed3"], arrays["rec_model-seed4"])
    assert "model-seed3" in done.stdout and "model-seed4" in done.stdout


def test_the_mesh_takes_the_devices_that_the_members_and_the_batch_divide_over() -> None:
    expected = {  # (members, batch size): member groups x batch shards on 4 devices
        (1, 8): (1, 4), (2, 8): (2, 2), (3, 8): (1, 4), (4, 8): (4, 1), (2, 5): (2, 1), (1, 5): (1, 1), (1, 6): (1, 3),
    }
    script = (
        "import ast, sys\n"
        "from vaegan_jax.sharding import describe, training_mesh\n"
        "for members, batch in ast.literal_eval(sys.argv[1]):\n"
        "    print(describe(training_mesh(members, batch), batch))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, repr(list(expected))], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=xla_environment(4))
    assert done.returncode == 0, done.stderr
    for ((_, batch), (groups, shards)), line in zip(expected.items(), done.stdout.splitlines(), strict=True):
        assert line.startswith(f"on {groups * shards} of 4 device(s): {groups} member group(s) x {shards} batch shard(s)")
        # Devices left unused are explained.
        assert line.endswith(f"batch size {batch} do not split over more)") == (groups * shards < 4), line


@pytest.mark.slow
def test_two_processes_evaluate_as_the_run_reported(ensemble_run: Path, tmp_path: Path) -> None:
    report = json.loads((ensemble_run / "metrics.json").read_text())
    done = run_processes("eval.py", ["--ckpt", str(ensemble_run), "--out", str(tmp_path / "eval"), "--baselines", "mean"],
                         n_processes=2, devices_each=2)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    methods = json.loads((tmp_path / "eval" / "metrics.json").read_text())["methods"]
    for member in report["members"]:
        pcc = methods[f"model-seed{member['seed']}"]["aggregate"]["pcc"]["mean"]
        np.testing.assert_allclose(pcc, member["test"]["pcc_fmri"], rtol=1e-5)


def test_members_are_taken_apart_and_stacked_back_bit_for_bit(tiny_config: config_lib.Config) -> None:
    config = config_lib.override(tiny_config, ["train.ensemble=3", "model.image_size=16"])
    states = create_members(config, 7, member_keys(config))
    members = [take_member(states, k) for k in range(3)]
    for member, k in zip(members, range(3)):
        assert all(a.shape == b.shape[1:] for a, b in zip(jax.tree.leaves(member), jax.tree.leaves(states)))
        assert all(np.array_equal(a, b[k]) for a, b in zip(jax.tree.leaves(member), jax.tree.leaves(states)))
    assert_trees_identical(flat_arrays(stack_members(members)), flat_arrays(states))
    # The members differ, so an order mixed up on the way would show.
    assert not np.array_equal(*(jax.tree.leaves(members[k]["generator"].params)[-1] for k in (0, 1)))


@pytest.mark.parametrize("flags, message", [
    (["--num-processes", "2"], "need --coordinator"),
    (["--coordinator", "localhost:1", "--num-processes", "2"], "needs --num-processes and --process-id"),
    (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "2"], "--process-id 2 is not in 0..1"),
])
def test_incomplete_process_flags_are_one_line_errors(
    flags: list[str], message: str, one_line_error: Callable[[], str]
) -> None:
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    train_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_cli)
    assert cli.run(train_cli.main, [*TINY_ARGS, *flags]) == cli.EXIT_BAD_INPUT
    assert message in one_line_error()


@pytest.mark.slow
def test_when_one_process_fails_the_other_says_so_in_one_line(data_file: Path, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    done = run_processes("train.py", [*TINY_ARGS, "--data", str(data_file), "--out", str(tmp_path / "run")],
                         n_processes=2, devices_each=1,
                         extra_args=lambda process_id: ["--out", str(not_a_folder)] if process_id == 1 else [])
    assert [d.returncode for d in done] == [cli.EXIT_LOST_PROCESS, cli.EXIT_BAD_INPUT], [d.stderr[-2000:] for d in done]
    for d, message in zip(done, ["lost contact with another process", "exists and is not a folder"]):
        lines = d.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], d.stderr
