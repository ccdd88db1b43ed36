"""Update steps and epochs: each network learns only where the stage table says it does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaegan_jax.config import Config
from vaegan_jax.data import Dataset
from vaegan_jax.models import NETWORKS
from vaegan_jax.steps import STAGES, Stage, States, TrainState, create_states, loss_weights, make_update_step
from vaegan_jax.training import Trainer, resolve_image_size

BATCH = 5
Setup = tuple[Config, States, dict[str, jax.Array]]
STAGE_LEARNERS = [(stage, learner) for stage in STAGES for learner in stage.learners]


def changed_leaves(before: object, after: object) -> list[bool]:
    """For each array leaf: whether it differs between two pytrees of the same structure."""
    return [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))]


def copy_states(states: States) -> States:
    """Fresh buffers, since the epoch function donates (invalidates) the states it is given."""
    return jax.tree.map(jnp.copy, states)


@pytest.fixture(scope="module")
def setup(tiny_config: Config, dataset: Dataset) -> Setup:
    """Freshly initialised states of the tiny networks and one random batch."""
    config = resolve_image_size(tiny_config, dataset)
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
    update = jax.jit(make_update_step(config, stage, learner))
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
    weights = loss_weights(learner, config.loss)
    expected = sum(w * float(metrics[f"{learner}/{term}"]) for term, w in weights.items() if w != 0)
    assert float(metrics[f"loss/{learner}"]) == pytest.approx(expected, rel=1e-5)
    assert np.isfinite(float(metrics[f"loss/{learner}"])) and float(metrics[f"grad_norm/{learner}"]) > 0


def test_encoders_get_no_gan_gradient_and_the_discriminator_no_feature_loss(tiny_config: Config) -> None:
    # Larsen et al.: L_GAN is not back-propagated into the encoder; D never minimises L_llike.
    assert set(loss_weights("visual_encoder", tiny_config.loss)) == {"kl", "llike", "latent_distill"}
    assert set(loss_weights("cognitive_encoder", tiny_config.loss)) == {"kl", "llike", "latent_distill"}
    assert set(loss_weights("discriminator", tiny_config.loss)) == {"gan_discriminator"}
    assert loss_weights("generator", tiny_config.loss) == {"llike": tiny_config.loss.gamma, "gan_generator": 1.0}


def test_the_stage_table_freezes_the_networks_of_method_md() -> None:
    learners = {stage.number: set(stage.learners) for stage in STAGES}
    assert learners == {
        1: {"visual_encoder", "generator", "discriminator"},
        2: {"cognitive_encoder", "discriminator"},
        3: {"generator", "discriminator"},
    }
    assert [stage.encoder for stage in STAGES] == ["visual_encoder", "cognitive_encoder", "cognitive_encoder"]
    assert [stage.real for stage in STAGES] == ["stimulus", "visual_reconstruction", "stimulus"]


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
    problem = trained._check_finite(stage, 1, jax.device_get(metrics))
    assert problem == "stage1 epoch 1: non-finite parameters or BatchNorm statistics of generator"
