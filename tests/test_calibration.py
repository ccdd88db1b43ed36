"""benchmarks/calibrate_standin.py: the model row reads a run's networks through the readout that stage II starts from."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from vaegan_jax import config as config_lib
from vaegan_jax.config import Config
from vaegan_jax.data import Dataset
from vaegan_jax.data.prepare import prepare
from vaegan_jax.steps import take_member
from vaegan_jax.training import run_training

sys.path.insert(0, str(REPO / "benchmarks"))
import calibrate_standin  # noqa: E402

SELECTED = 8


@pytest.mark.slow
def test_the_model_row_reads_and_decodes_the_voxels_as_the_runs_ridge_start_does(
    tiny_config: Config, dataset: Dataset, tmp_path: Path
) -> None:
    # Stage II at learning rate 0 keeps the cognitive encoder at its ridge start, mixed with the inverted encoding
    # model, so the run's own fMRI path at that checkpoint is the readout the calibration fits again.
    config = config_lib.override(tiny_config, [
        "model.cognitive_hidden=0", "train.cognitive_init=ridge", f"train.selected_voxels={SELECTED}",
        "train.epochs=1,1,0", "optim.lr_cognitive_encoder=0", "train.readout_mix=0.5", "inference.samples=4",
        "inference.temperature=0.75",
    ])
    run_training(config, dataset, tmp_path / "run", progress=False, log=lambda message: None)
    run = calibrate_standin.last_checkpoint(str(tmp_path / "run"))
    assert run.meta.stage == 2
    data = prepare(dataset, config.train.val_trials, config.train.split_seed, SELECTED)
    chosen = data.voxel_selection
    fit_voxels, test_voxels = data.fit.voxels[:, chosen], data.test.voxels[:, chosen]
    run_encoder = take_member(run.states, 0)["cognitive_encoder"].params

    # The tiny config trains stage I on the fit trials alone, so the encoding model's prior is theirs too.
    encoder = take_member(calibrate_standin.readout_states(run, fit_voxels, data.fit.images, None), 0)["cognitive_encoder"]
    for head in ("mu", "logvar"):
        for name in ("kernel", "bias"):
            np.testing.assert_allclose(encoder.params[head][name], run_encoder[head][name], rtol=1e-4, atol=1e-5)
    unmixed = dataclasses.replace(run, config=config_lib.override(run.config, ["train.readout_mix=0"]))
    unmixed_encoder = take_member(calibrate_standin.readout_states(unmixed, fit_voxels, data.fit.images, None), 0)
    # The tolerance tells the readouts apart: without the run's mix the map is not the run's.
    assert not np.allclose(unmixed_encoder["cognitive_encoder"].params["mu"]["kernel"], run_encoder["mu"]["kernel"],
                           rtol=1e-4, atol=1e-5)

    decoded = calibrate_standin.model_reconstructions(run, fit_voxels, data.fit.images, test_voxels, extra_images=None)
    assert decoded.shape == data.test.images.shape
    np.testing.assert_allclose(decoded, run.decode(test_voxels).mean(axis=0), atol=1e-5)
