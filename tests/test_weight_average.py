"""Stage I's moving average of the image path's weights (`train.weight_average`): kept by its steps and handed
on to stage II (a whole run's hand-on, also after a resume: test_snapshots; the `fast` preset's: test_fast_preset)."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np
import pytest

from conftest import leaves
from vaegan_jax import config as config_lib
from vaegan_jax.config import Config
from vaegan_jax.errors import ConfigError
from vaegan_jax.steps import AVERAGED, STAGES, create_states, hand_on_averages, make_train_step, weights_of


@pytest.fixture(scope="module")
def averaging(tiny_config: Config) -> Config:
    return config_lib.override(tiny_config, ["train.weight_average=0.9", "model.image_size=28"])


@functools.lru_cache(maxsize=None)
def compiled_step(config: Config, stage_number: int) -> Callable:
    """One jitted step per config and stage, shared by the tests that only change the states' values."""
    return jax.jit(make_train_step(config, STAGES[stage_number - 1]))


def step_inputs(config: Config, steps_before: int = 0) -> tuple[dict, dict]:
    """Fresh states that have taken `steps_before` steps, and a batch."""
    states = create_states(config, 12, jax.random.key(0))
    states = {name: state.replace(step=state.step + steps_before) for name, state in states.items()}
    batch = {"image": jax.random.uniform(jax.random.key(1), (5, 28, 28, 1), minval=-1.0),
             "voxels": jax.random.normal(jax.random.key(2), (5, 12))}
    return states, batch


def one_step(config: Config, stage_number: int, steps_before: int = 0) -> tuple[dict, dict]:
    states, batch = step_inputs(config, steps_before)
    return states, compiled_step(config, stage_number)(states, batch, jax.random.key(3))[0]


@pytest.mark.parametrize("steps_before, kept", [(0, 0.0), (3, 0.75), (20, 0.9)])
def test_stage_one_steps_move_the_image_paths_averages_towards_its_new_weights(
    averaging: Config, steps_before: int, kept: float
) -> None:
    # The average is the plain mean of the weights so far until it covers 1 / (1 - 0.9) = 10 steps.
    before, after = one_step(averaging, 1, steps_before)
    assert {name for name, state in after.items() if state.average is not None} == set(AVERAGED)
    for name in AVERAGED:
        expected = jax.tree.map(lambda old, new: kept * old + (1 - kept) * new, before[name].average,
                                weights_of(after[name]))
        for got, want in zip(leaves(after[name].average), leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        if kept > 0:
            assert any(not np.array_equal(a, w) for a, w in zip(leaves(after[name].average), leaves(weights_of(after[name]))))
    handed = hand_on_averages(after)
    for name in AVERAGED:
        for got, want in zip(leaves(weights_of(handed[name])), leaves(after[name].average)):
            np.testing.assert_array_equal(got, want)
    for name in ("discriminator", "cognitive_encoder"):
        for got, want in zip(leaves(weights_of(handed[name])), leaves(weights_of(after[name]))):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("stage_number", [2, 3])
def test_the_paired_stages_leave_the_averages_alone(averaging: Config, stage_number: int) -> None:
    before, after = one_step(averaging, stage_number)
    for name in AVERAGED:
        for got, want in zip(leaves(after[name].average), leaves(before[name].average)):
            np.testing.assert_array_equal(got, want)


def test_without_averaging_no_network_keeps_an_average(tiny_config: Config) -> None:
    config = config_lib.override(tiny_config, ["model.image_size=28"])
    states, batch = step_inputs(config)
    # What the step returns, traced without being compiled.
    after, _ = jax.eval_shape(make_train_step(config, STAGES[0]), states, batch, jax.random.key(3))
    assert all(state.average is None for state in after.values())


@pytest.mark.parametrize("decay", ["-0.1", "1.0", "1.5"])
def test_a_decay_outside_zero_to_one_is_refused(tiny_config: Config, decay: str) -> None:
    with pytest.raises(ConfigError, match="weight_average"):
        config_lib.override(tiny_config, [f"train.weight_average={decay}"])
