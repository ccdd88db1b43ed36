"""Mixed precision: bfloat16 compute with float32 parameters trains with finite losses on the CPU."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaegan_jax import config as config_lib
from vaegan_jax.data.prepare import prepare, to_model_images
from vaegan_jax.rng import member_keys
from vaegan_jax.steps import STAGES, EpochRunner, create_members, create_states, make_update_step


def _arithmetic(config: config_lib.Config, n_voxels: int) -> list[tuple[str, str]]:
    """(operation, element type of its first operand) of every convolution and matrix product in the lowered
    update steps of stage I's learners and stage II's cognitive encoder: every network, forward and backward."""
    states = create_states(config, n_voxels, jax.random.key(0))
    size = config.model.image_size
    batch = {"image": jnp.zeros((5, size, size, 1)), "voxels": jnp.zeros((5, n_voxels))}
    found = []
    for stage, learner in [*((STAGES[0], name) for name in STAGES[0].learners), (STAGES[1], "cognitive_encoder")]:
        text = jax.jit(make_update_step(config, stage, learner)).lower(states, batch, jax.random.key(1)).as_text()
        found += re.findall(r"stablehlo\.(convolution|dot_general)\b.*: \(tensor<(?:\d+x)*(\w+)>", text)
    return found


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_compute_dtype_is_the_one_the_convolutions_and_dense_layers_run_in(dataset, tiny_config, dtype):
    config = config_lib.override(tiny_config, [f"model.compute_dtype={dtype}", f"model.image_size={dataset.image_size}"])
    found = _arithmetic(config, dataset.n_voxels)
    convolutions = {element for operation, element in found if operation == "convolution"}
    products = {element for operation, element in found if operation == "dot_general"}
    if dtype == "bfloat16":
        # Every convolution; the hidden dense layers too, while the heads (mu, logvar, D's logit) stay float32.
        assert convolutions == {"bf16"} and products == {"bf16", "f32"}
    else:
        assert convolutions == products == {"f32"}


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_parameters_and_finite_losses(dataset, tiny_config):
    config = config_lib.override(tiny_config, ["model.compute_dtype=bfloat16"])
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
