"""The defaults users train with: train.py's `fast` preset, an epoch per stage on a small stand-in with extras."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import assert_trees_identical, flat_arrays, run_train_py, write_small_dataset, xla_environment
from vaegan_jax.checkpoints import load_checkpoint
from vaegan_jax.data import load_dataset
from vaegan_jax.data.prepare import to_model_images
from vaegan_jax import load_run
from vaegan_jax.models import build_networks
from vaegan_jax.steps import take_member, weights_of
from vaegan_jax.runs import RunPaths

pytestmark = pytest.mark.slow

N_EXTRA = 32


def test_the_fast_preset_trains_with_extras_a_ridge_started_encoder_and_its_own_choices(tmp_path: Path) -> None:
    # 40 training trials leave 30 to fit (the preset carves 10 for validation): two batches of 16 with the
    # extras in stage I, one without them in stages II and III. One step per compiled call keeps compiling short.
    data = write_small_dataset(tmp_path / "small.npz", n_train=40, n_test=6, n_voxels=40, n_extra=N_EXTRA)
    run = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(run), "--epochs", "1,1,1", "--no-progress", "--set", "train.steps_per_call=1"]
    # The preset's full-size networks spend longer running than compiling: XLA's default level pays here.
    done = run_train_py(argv, env=xla_environment(optimised=True))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "preset fast" in out and f"(+{N_EXTRA} image-only for stage I)" in out

    # The run chose its voxel count, temperature and readout mix among the preset's candidates, and records them.
    checkpoint = load_run(run)
    chosen = json.loads(RunPaths(run).choices.read_text())["chosen"]
    assert checkpoint.config.train.selected_voxels == chosen["train.selected_voxels"] >= 0
    assert checkpoint.config.inference.temperature == chosen["inference.temperature"]
    assert chosen["inference.temperature"] in checkpoint.config.inference.temperature_candidates
    assert checkpoint.config.train.readout_mix == chosen["train.readout_mix"]
    assert chosen["train.readout_mix"] in checkpoint.config.train.readout_mix_candidates

    # Stage II started the linear cognitive encoder from its readout onto the visual encoder's latent means,
    # and one epoch at the preset's small rate leaves it there: its means follow the image path's, trial by
    # trial (0.91 on average here), where random weights would not (0.07).
    data = checkpoint.prepare(load_dataset(data), warn=pytest.fail)
    states = take_member(checkpoint.states, 0)
    # Stage I's epoch ran over the fit trials and the extras: the visual encoder learns in it alone.
    assert int(states["visual_encoder"].step) == (len(data.fit) + N_EXTRA) // checkpoint.config.train.batch_size
    networks = build_networks(checkpoint.config.model)

    def means(name: str, inputs: np.ndarray) -> np.ndarray:
        variables = {"params": states[name].params, "batch_stats": states[name].batch_stats}
        return np.asarray(networks[name].apply(variables, inputs, train=False)[0])

    image_path = means("visual_encoder", to_model_images(data.fit.images, checkpoint.config.model.image_size))
    fmri_path = means("cognitive_encoder", jax.numpy.asarray(data.model_voxels(data.fit)))
    correlations = [np.corrcoef(a, b)[0, 1] for a, b in zip(image_path.T, fmri_path.T)]
    assert np.mean(correlations) > 0.5, correlations

    # Stage I handed on the visual encoder's weight average (the preset's train.weight_average), and no later
    # stage trains it (stage III fine-tunes the generator, so the best checkpoint may hold another generator);
    # without the hand-on these would be stage I's last weights, not their 3-step mean.
    saved = take_member(load_checkpoint(run).arrays.states, 0)["visual_encoder"]
    assert_trees_identical(flat_arrays(weights_of(saved)), flat_arrays(saved.average))
