"""Ensembles: K members trained side by side equal K separately trained models, on one device or several."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from conftest import TINY_ARGS, flat_arrays, run_script, run_train_py
from vaegan_jax import config as config_lib
from vaegan_jax import evaluation
from vaegan_jax.checkpoints import CheckpointStore
from vaegan_jax.data import Dataset
from vaegan_jax.steps import STAGES, EpochRunner, create_members, member_keys, take_member
from vaegan_jax.training import RunPaths, Trainer

# Members and single runs execute the same convolutions; what differs is how XLA fuses the rest of the
# program around the member axis: float32 roundings (relative 1e-7) in a step. Training amplifies them
# quickly, because RMSProp's first steps move each parameter by about +-lr whatever the gradient's size,
# so a gradient element near zero takes its sign from rounding: one step of every stage agrees to a
# relative distance below 1e-5, a whole tiny run (one epoch per stage) to ~4e-2, while another seed is at
# ~1. Biases just before a BatchNorm are left out: the BatchNorm cancels them, so their gradients are pure
# rounding, and they change no output (nor do the BatchNorm running means that absorb them).
EPOCHS = ["--epochs", "1,1,1"]
STEP_DISTANCE = 1e-5
RUN_DISTANCE = 0.1
OTHER_SEED_DISTANCE = 0.3


def _relative_distance(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def _weights(states: Any) -> dict[str, np.ndarray]:
    """Kernels, BatchNorm scales and running variances of states, flattened."""
    return {path: value for path, value in flat_arrays(states).items()
            if (".params" in path or ".batch_stats" in path) and path.endswith(("['kernel']", "['scale']", "['var']"))}


def _run_weights(run: Path, k: int) -> dict[str, np.ndarray]:
    """Member k's `_weights` at the run's newest checkpoint."""
    store = CheckpointStore(RunPaths(run).checkpoints, read_only=True)
    latest = store.latest_step()
    store.close()
    return _weights(take_member(evaluation.load_checkpoint(run, latest).states, k))


def _worst_distance(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> tuple[str, float]:
    assert actual.keys() == expected.keys()
    distances = {path: _relative_distance(actual[path], expected[path]) for path in expected}
    worst = max(distances, key=distances.get)
    return worst, distances[worst]


@pytest.fixture(scope="module")
def ensemble_run(data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run of two members, seeds 3 and 4."""
    out = tmp_path_factory.mktemp("ensemble") / "run"
    done = run_train_py([*TINY_ARGS, *EPOCHS, "--data", str(data_file), "--out", str(out), "--seed", "3", "--ensemble", "2"])
    assert done.returncode == 0, done.stderr
    assert "members  2 (seeds 3..4) on 1 of 1 device(s)" in done.stdout
    return out


def test_one_step_of_each_member_equals_the_step_of_the_model_alone(tiny_config: config_lib.Config, dataset: Dataset) -> None:
    config = config_lib.override(tiny_config, ["train.ensemble=2", "train.seed=3", "train.steps_per_call=1"])
    trainer = Trainer(config, dataset, RunPaths(Path("unused")), progress=False)
    alone = Trainer(config_lib.override(config, ["train.ensemble=1", "train.seed=4"]), dataset, RunPaths(Path("unused")),
                    progress=False)
    assert _worst_distance(_weights(take_member(trainer.states, 1)), _weights(take_member(alone.states, 0)))[1] == 0
    for stage in STAGES:
        for run in (trainer, alone):
            # One batch's worth of data: the epoch is one step, its batch drawn by each member's own key.
            data = jax.tree.map(lambda a: a[: config.train.batch_size], run.arrays["paired"])
            one_step = EpochRunner(run.config, stage, config.train.batch_size)
            run.states, _ = one_step(run.states, data, jax.vmap(lambda key: jax.random.fold_in(key, stage.number))(run.keys))
        worst = _worst_distance(_weights(take_member(trainer.states, 1)), _weights(take_member(alone.states, 0)))
        assert worst[1] < STEP_DISTANCE, (stage.name, worst)


def test_each_member_of_a_run_is_the_model_trained_alone_with_its_seed(
    ensemble_run: Path, data_file: Path, tmp_path: Path
) -> None:
    for k, seed in enumerate((3, 4)):
        alone = tmp_path / f"seed{seed}"
        done = run_train_py([*TINY_ARGS, *EPOCHS, "--data", str(data_file), "--out", str(alone), "--seed", str(seed)])
        assert done.returncode == 0, done.stderr
        worst = _worst_distance(_run_weights(ensemble_run, k), _run_weights(alone, 0))
        assert worst[1] < RUN_DISTANCE, (seed, worst)
    # The members are different models, not one model twice.
    first, second = _run_weights(ensemble_run, 0), _run_weights(ensemble_run, 1)
    assert all(_relative_distance(first[p], second[p]) > OTHER_SEED_DISTANCE for p in first if p.endswith("['kernel']"))


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


def test_members_split_across_devices_train_as_on_one_device(ensemble_run: Path, data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = run_train_py(
        [*TINY_ARGS, *EPOCHS, "--data", str(data_file), "--out", str(out), "--seed", "3", "--ensemble", "2"], env=env
    )
    assert done.returncode == 0, done.stderr
    assert "members  2 (seeds 3..4) on 2 of 4 device(s)" in done.stdout
    for k in range(2):
        worst = _worst_distance(_run_weights(out, k), _run_weights(ensemble_run, k))
        assert worst[1] < RUN_DISTANCE, (k, worst)


def test_member_helpers_round_trip(tiny_config: config_lib.Config) -> None:
    config = config_lib.override(tiny_config, ["train.ensemble=3", "model.image_size=16"])
    states = create_members(config, 7, member_keys(config))
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(states))
    second = take_member(states, 1)
    assert all(a.shape == b.shape[1:] for a, b in zip(jax.tree.leaves(second), jax.tree.leaves(states)))
