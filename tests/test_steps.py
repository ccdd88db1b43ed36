"""Update steps and epochs: each network learns only where the stage table says it does."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaegan_jax import config as config_lib
from vaegan_jax.config import Config, LossConfig
from vaegan_jax.errors import ConfigError
from vaegan_jax.data import Dataset
from vaegan_jax.divergence import first_non_finite
from vaegan_jax.models import NETWORKS, build_networks
from vaegan_jax.steps import (
    STAGES, Stage, States, TrainState, create_states, loss_terms, make_decode, make_joint_gradients, make_optimizer,
    make_train_step, make_update_step,
)
from vaegan_jax.training import Trainer, resolve_image_size

from conftest import assert_trees_identical, flat_arrays

BATCH = 5
Setup = tuple[Config, States, dict[str, jax.Array]]
STAGE_LEARNERS = [(stage, learner) for stage in STAGES for learner in stage.learners]
# Distinct weights, none of them 1 or 0, so that a term weighted by another's weight or dropped shows; gamma
# 2^-20, small as in the presets, so that the generator's step follows its GAN term.
WEIGHTS = ["loss.kl_weight=0.25", "loss.llike_weight=0.0625", "loss.gamma=9.5367431640625e-07", "loss.latent_distill=0.5",
           "loss.pixel_weight=0.375"]


def expected_loss(learner: str, terms: dict[str, float], loss: LossConfig) -> float:
    """A learner's loss from its terms, as Larsen et al. (2016) and method.md weigh them: the encoders
    minimise KL and the feature loss (plus, in stage II, the distance to the image path's latent); the
    generator the GAN term and gamma times the feature loss; the discriminator its GAN term alone. The
    pixel-space loss joins the content terms, weighted by pixel_weight (times gamma for the generator)."""
    if learner == "discriminator":
        return terms["gan_discriminator"]
    if learner == "generator":
        return loss.gamma * (terms["llike"] + loss.pixel_weight * terms["pixel"]) + terms["gan_generator"]
    return (loss.kl_weight * terms["kl"] + loss.llike_weight * terms["llike"] + loss.pixel_weight * terms["pixel"]
            + loss.latent_distill * terms["latent_distill"])


@functools.cache
def jitted_update(config: Config, stage: Stage, learner: str) -> Any:
    """A learner's compiled update step, built once for every test of this file that takes it under `config`."""
    return jax.jit(make_update_step(config, stage, learner))


def changed_leaves(before: object, after: object) -> list[bool]:
    """For each array leaf: whether it differs between two pytrees of the same structure."""
    return [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))]


def copy_states(states: States) -> States:
    """Fresh buffers, since the epoch function donates (invalidates) the states it is given."""
    return jax.tree.map(jnp.copy, states)


@pytest.fixture(scope="module")
def setup(tiny_config: Config, dataset: Dataset) -> Setup:
    """Freshly initialised states of the tiny networks (loss weights `WEIGHTS`) and one random batch."""
    config = resolve_image_size(config_lib.override(tiny_config, WEIGHTS), dataset)
    size = config.model.image_size
    states = create_states(config, dataset.n_voxels, jax.random.key(0))
    key_image, key_voxels = jax.random.split(jax.random.key(1))
    batch = {
        "image": jax.random.uniform(key_image, (BATCH, size, size, 1), minval=-1.0, maxval=1.0),
        "voxels": jax.random.normal(key_voxels, (BATCH, dataset.n_voxels)),
    }
    return config, states, batch


@pytest.mark.parametrize(("stage", "learner"), STAGE_LEARNERS, ids=[f"stage{s.number}-{n}" for s, n in STAGE_LEARNERS])
def test_an_update_step_moves_every_parameter_of_its_own_network(setup: Setup, stage: Stage, learner: str) -> None:
    config, states, batch = setup
    update = jitted_update(config, stage, learner)
    new_state, metrics = update(states, batch, jax.random.key(2))
    old_state = states[learner]
    assert isinstance(new_state, TrainState)
    # The learner's own structure: no parameters or statistics of another network slipped in.
    assert jax.tree.structure(new_state.params) == jax.tree.structure(old_state.params)
    assert jax.tree.structure(new_state.batch_stats) == jax.tree.structure(old_state.batch_stats)
    assert all(changed_leaves(old_state.params, new_state.params))
    # Its BatchNorm layers ran on batch statistics and moved their running averages.
    assert all(changed_leaves(old_state.batch_stats, new_state.batch_stats))
    assert int(new_state.step) == int(old_state.step) + 1
    # The reported loss is the learner's weighted sum of its terms, and finite.
    terms = {key.split("/")[1]: float(value) for key, value in metrics.items() if key.startswith(f"{learner}/")}
    assert float(metrics[f"loss/{learner}"]) == pytest.approx(expected_loss(learner, terms, config.loss), rel=1e-5)
    assert np.isfinite(float(metrics[f"loss/{learner}"])) and float(metrics[f"grad_norm/{learner}"]) > 0


def _updated(config: Config, stage: Stage, learner: str, setup: Setup) -> dict[str, np.ndarray]:
    """The learner's parameters and statistics after one update from `setup`'s states and batch under `config`."""
    _, states, batch = setup
    new_state, _ = jitted_update(config, stage, learner)(states, batch, jax.random.key(2))
    return flat_arrays((new_state.params, new_state.batch_stats))


@pytest.mark.parametrize(("stage", "learner"), [(STAGES[0], "visual_encoder"), (STAGES[1], "cognitive_encoder")],
                         ids=["stage1-visual_encoder", "stage2-cognitive_encoder"])
def test_the_encoders_updates_ignore_the_gan_labels(setup: Setup, stage: Stage, learner: str) -> None:
    # Larsen et al.: L_GAN is not back-propagated into the encoders, so other labels change nothing there,
    # while the generator's update, which the GAN term drives, changes.
    config = setup[0]
    relabelled = config_lib.override(config, ["loss.real_label=0.95", "loss.generator_label=0.1"])
    assert_trees_identical(_updated(relabelled, stage, learner, setup), _updated(config, stage, learner, setup))
    assert any(changed_leaves(_updated(relabelled, STAGES[0], "generator", setup),
                              _updated(config, STAGES[0], "generator", setup)))


def test_the_discriminators_update_ignores_the_encoder_and_feature_loss_weights(setup: Setup) -> None:
    # D never minimises L_llike (nor KL, nor the pixel loss): other weights of those terms leave its update as it was.
    config = setup[0]
    reweighted = config_lib.override(config, ["loss.kl_weight=3", "loss.llike_weight=5", "loss.gamma=7",
                                              "loss.latent_distill=9", "loss.pixel_weight=11"])
    for stage in STAGES:
        assert_trees_identical(_updated(reweighted, stage, "discriminator", setup),
                               _updated(config, stage, "discriminator", setup))


def _own_gradient(config: Config, stage: Stage, learner: str, setup: Setup, key: jax.Array) -> Any:
    """The gradient of a learner's loss (`expected_loss` of its terms) with respect to its own parameters."""
    _, states, batch = setup
    networks = build_networks(config.model)

    def loss(learner_params: Any) -> jax.Array:
        params = {name: states[name].params for name in NETWORKS}
        terms, _ = loss_terms(networks, {**params, learner: learner_params}, states, stage, batch, key, config.loss,
                              stage.learners)
        return expected_loss(learner, terms, config.loss)

    return jax.jit(jax.grad(loss))(states[learner].params)


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_joint_gradients_are_each_learners_own_from_one_forward_pass(setup: Setup, stage: Stage) -> None:
    config, states, batch = setup
    key = jax.random.key(2)
    results, _ = jax.jit(make_joint_gradients(config, stage))(states, batch, key)
    assert set(results) == set(stage.learners)
    for learner, (loss, grads, terms) in results.items():
        want = flat_arrays(_own_gradient(config, stage, learner, setup, key))
        got = flat_arrays(grads)
        assert got.keys() == want.keys()
        # Float rounding in two orders of summation: about 1e-5 of the largest gradient, all there is of the
        # gradient of a bias that BatchNorm follows (mathematically 0).
        scale = max(float(np.max(np.abs(g))) for g in want.values())
        for path in want:
            np.testing.assert_allclose(got[path], want[path], rtol=1e-4, atol=1e-4 * scale, err_msg=f"{learner}{path}")
        reported = {term: float(value) for term, value in terms.items()}
        assert float(loss) == pytest.approx(expected_loss(learner, reported, config.loss), rel=1e-6)


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_a_simultaneous_step_moves_every_learner_from_the_states_it_began_with(setup: Setup, stage: Stage) -> None:
    # Larsen et al.'s Algorithm 1. The sequential step differs from its second learner on, which sees the
    # first's result; the running statistics are those of the learner's own update from the same states.
    config, states, batch = setup
    key = jax.random.key(2)
    together, metrics = jax.jit(make_train_step(config_lib.override(config, ["train.updates=simultaneous"]), stage))(
        states, batch, key)
    in_turn, _ = jax.jit(make_train_step(config, stage))(states, batch, key)
    for learner in stage.learners:
        alone, _ = jitted_update(config, stage, learner)(states, batch, key)
        assert int(together[learner].step) == int(states[learner].step) + 1
        assert all(changed_leaves(states[learner].params, together[learner].params)), learner
        for got, want in zip(jax.tree.leaves(together[learner].batch_stats), jax.tree.leaves(alone.batch_stats)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        assert np.isfinite(float(metrics[f"loss/{learner}"])) and float(metrics[f"grad_norm/{learner}"]) > 0
    assert any(changed_leaves(in_turn[stage.learners[-1]].params, together[stage.learners[-1]].params))
    for name in set(NETWORKS) - set(stage.learners):
        assert_trees_identical(flat_arrays(together[name]), flat_arrays(states[name]))


def test_an_unknown_update_order_is_refused(setup: Setup) -> None:
    with pytest.raises(ConfigError, match="train.updates must be 'sequential' or 'simultaneous', got 'together'"):
        config_lib.override(setup[0], ["train.updates=together"])


def _apply(config: Config, states: States, name: str, x: jax.Array, train: bool = True) -> Any:
    """A network's output; in training mode with batch statistics, as the learners see each other in a step."""
    variables = {"params": states[name].params, "batch_stats": states[name].batch_stats}
    network = build_networks(config.model)[name]
    return network.apply(variables, x, train=True, mutable=["batch_stats"])[0] if train else network.apply(variables, x, train=False)


def _slope(f: Any, before: Any, after: Any) -> float:
    """How f changes along an update from parameters `before` to `after`, to first order.

    RMSProp's first step moves every parameter by about 3 lr whatever the size of its gradient, and in
    networks this small the curvature then swamps the change the loss asks for; its direction does not.
    """
    grads = jax.jit(jax.grad(f))(before)
    return float(sum(jnp.sum(g * (b - a)) for g, a, b in zip(*map(jax.tree.leaves, (grads, before, after)))))


@pytest.fixture(scope="module")
def stage3(setup: Setup) -> tuple[Config, States, dict[str, jax.Array], jax.Array]:
    """Stage III's inputs with a confident cognitive encoder (log-variance -30), so that the fakes of a step are
    G(mu) of the batch's voxels, which the tests can rebuild: (config, states, batch, mu)."""
    config, states, batch = setup
    cognitive = states["cognitive_encoder"]
    logvar = {"kernel": jnp.zeros_like(cognitive.params["logvar"]["kernel"]),
              "bias": jnp.full_like(cognitive.params["logvar"]["bias"], -30.0)}
    states = {**states, "cognitive_encoder": cognitive.replace(params={**cognitive.params, "logvar": logvar})}
    mu, _ = _apply(config, states, "cognitive_encoder", batch["voxels"], train=False)
    return config, states, batch, mu


def test_a_discriminator_step_widens_the_gap_between_real_and_fake_logits(stage3) -> None:
    config, states, batch, mu = stage3
    fakes = _apply(config, states, "generator", mu)

    def gap(params: Any) -> jax.Array:
        with_params = {"discriminator": states["discriminator"].replace(params=params)}
        real_logits, _ = _apply(config, with_params, "discriminator", batch["image"])
        fake_logits, _ = _apply(config, with_params, "discriminator", fakes)
        return jnp.mean(real_logits) - jnp.mean(fake_logits)

    new_state, _ = jitted_update(config, STAGES[2], "discriminator")(states, batch, jax.random.key(2))
    assert _slope(gap, states["discriminator"].params, new_state.params) > 0


def test_a_generator_step_raises_the_discriminators_logits_on_its_fakes(stage3) -> None:
    config, states, batch, mu = stage3

    def fake_logit(params: Any) -> jax.Array:
        fakes = _apply(config, {"generator": states["generator"].replace(params=params)}, "generator", mu)
        return jnp.mean(_apply(config, states, "discriminator", fakes)[0])

    new_state, _ = jitted_update(config, STAGES[2], "generator")(states, batch, jax.random.key(2))
    assert _slope(fake_logit, states["generator"].params, new_state.params) > 0


def test_the_stage_table_freezes_the_networks_of_method_md() -> None:
    learners = {stage.number: set(stage.learners) for stage in STAGES}
    assert learners == {
        1: {"visual_encoder", "generator", "discriminator"},
        2: {"cognitive_encoder", "discriminator"},
        3: {"generator", "discriminator"},
    }
    assert [stage.encoder for stage in STAGES] == ["visual_encoder", "cognitive_encoder", "cognitive_encoder"]
    assert [stage.real for stage in STAGES] == ["stimulus", "visual_reconstruction", "stimulus"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_a_full_epoch_changes_the_learners_and_leaves_every_other_network_untouched(
    trained: Trainer, stage: Stage
) -> None:
    before = copy_states(trained.states)
    data = trained.arrays["paired" if stage.paired else "images_only"]
    after, metrics = trained.epoch_runners[stage.number](copy_states(before), data, jax.random.split(jax.random.key(3), 1))
    for name in NETWORKS:
        moved = changed_leaves(before[name], after[name])
        if name in stage.learners:
            assert all(changed_leaves(before[name].params, after[name].params)), name
            assert int(after[name].step[0]) == int(before[name].step[0]) + trained.epoch_runners[stage.number].n_batches
        else:
            # Parameters, optimiser state and running statistics: stage II leaves G alone, stage III E_cog.
            assert not any(moved), name
    n_batches = len(data["image"]) // trained.config.train.batch_size
    for learner in stage.learners:
        assert metrics[f"loss/{learner}"].shape == (1, n_batches)
        assert np.all(np.isfinite(metrics[f"loss/{learner}"]))
        assert bool(np.all(metrics[f"finite/{learner}"]))


@pytest.mark.slow
def test_later_epochs_and_resumed_states_reuse_the_first_epochs_program(trained: Trainer) -> None:
    # The trained run compiled each stage's epoch once, and restored (resumed) states run the same program.
    for stage in STAGES:
        runner = trained.epoch_runners[stage.number]
        data = trained.arrays["paired" if stage.paired else "images_only"]
        runner(copy_states(trained.states), data, jax.random.split(jax.random.key(4), 1))
        assert runner.compilations() == 1, stage.name


def test_initial_states_depend_only_on_the_key(setup: Setup, dataset: Dataset) -> None:
    config, states, _ = setup
    again = create_states(config, dataset.n_voxels, jax.random.key(0))
    other = create_states(config, dataset.n_voxels, jax.random.key(1))
    assert not any(changed_leaves(states, again))
    for name in NETWORKS:
        kernels = [(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(states[name].params)
                   if jax.tree_util.keystr(path).endswith("['kernel']")]
        others = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(other[name].params)}
        assert all(not np.array_equal(leaf, others[jax.tree_util.keystr(path)]) for path, leaf in kernels), name


@pytest.mark.slow
def test_non_finite_batchnorm_statistics_are_caught_though_the_losses_stay_finite(trained: Trainer) -> None:
    # Learners normalise with batch statistics, so a NaN running mean leaves every loss finite; only the
    # epoch's finiteness check can tell that the network would reconstruct NaN at evaluation.
    stage = STAGES[0]
    poisoned = copy_states(trained.states)
    generator = poisoned["generator"]
    stats = jax.tree.map(lambda x: x.at[...].set(jnp.nan), generator.batch_stats)
    poisoned["generator"] = generator.replace(batch_stats=stats)
    _, metrics = trained.epoch_runners[stage.number](poisoned, trained.arrays["images_only"], jax.random.split(jax.random.key(5), 1))
    assert np.all(np.isfinite(metrics["loss/generator"]))
    assert not bool(metrics["finite/generator"][0]) and bool(metrics["finite/discriminator"][0])
    problem = first_non_finite(stage, 1, jax.device_get(metrics))
    assert problem == "stage1 epoch 1: non-finite parameters or BatchNorm statistics of generator"


def test_a_trials_decoded_image_does_not_depend_on_the_trials_decoded_with_it(tiny_config: Config) -> None:
    # decode.py on one scan must give the image eval.py gives it among the whole split.
    config = config_lib.override(tiny_config, ["model.image_size=28"])
    generator = create_states(config, 16, jax.random.key(0))["generator"]
    decode = jax.jit(make_decode(config, samples=4))
    mu, logvar = jax.random.normal(jax.random.key(1), (2, 6, config.model.latent_dim))
    key, temperature = jax.random.key(2), jnp.float32(1.0)
    whole = decode(generator, mu, logvar, key, temperature)
    # An untrained generator's images are faint (about 1e-4): hence the tolerances.
    np.testing.assert_allclose(decode(generator, mu[3:5], logvar[3:5], key, temperature), whole[3:5], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(decode(generator, mu[4:], logvar[4:], key, temperature), whole[4:], rtol=1e-4, atol=1e-8)
    assert np.abs(decode(generator, mu, logvar, jax.random.key(3), temperature) - whole).max() > 1e-5


@pytest.mark.parametrize("preset, initial_mean_square, eps", [("paper", 1.0, 1e-10), ("fast", 0.0, 1e-8)])
def test_rmsprop_starts_as_the_presets_reference_does(preset: str, initial_mean_square: float, eps: float) -> None:
    # paper: TensorFlow 1's RMSPropOptimizer (the official code's), its mean square starting at 1; fast: optax's.
    config = config_lib.preset(preset)
    tx = make_optimizer(config, "generator")
    gradient = {"w": jnp.array([0.1, -0.02])}
    updates, _ = tx.update(gradient, tx.init({"w": jnp.zeros(2)}))
    mean_square = config.optim.rmsprop_decay * initial_mean_square + (1 - config.optim.rmsprop_decay) * gradient["w"] ** 2
    expected = -config.optim.lr_generator * gradient["w"] / jnp.sqrt(mean_square + eps)
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-5)
