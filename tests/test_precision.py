"""Mixed precision: bfloat16 compute with float32 parameters trains with finite losses on the CPU."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vaegan_jax import config as config_lib
from vaegan_jax.data.prepare import prepare, to_model_images
from vaegan_jax.steps import STAGES, EpochRunner, create_members, member_keys


def test_bfloat16_compute_keeps_float32_parameters_and_finite_losses(dataset, tiny_config):
    config = config_lib.override(tiny_config, ["model.compute_dtype=bfloat16", "train.steps_per_call=1"])
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, image_size=dataset.image_size))
    data = prepare(dataset, config.train.val_trials, config.train.split_seed)
    arrays = {"image": to_model_images(data.fit.images, dataset.image_size), "voxels": jnp.asarray(data.fit.voxels)}
    states = create_members(config, dataset.n_voxels, member_keys(config))
    for stage in STAGES:
        runner = EpochRunner(config, stage, len(data.fit))
        states, metrics = runner(states, arrays, jax.random.split(jax.random.key(stage.number), 1))
        for name in stage.learners:
            assert np.all(np.isfinite(np.asarray(metrics[f"loss/{name}"]))), (stage.name, name)
            assert bool(np.all(metrics[f"finite/{name}"]))
    for state in states.values():
        assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
