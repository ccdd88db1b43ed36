"""Stage I's KL weight chosen by the run: variants trained side by side, one kept by cross-validation on the
fit trials (config, steps, choices, training)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaegan_jax import config as config_lib
from vaegan_jax.checkpoints import abstract_tree, load_checkpoint
from vaegan_jax.config import Config, member_count, member_origins
from vaegan_jax.data import Dataset
from vaegan_jax.data.prepare import to_model_images
from vaegan_jax.errors import ConfigError, Interrupted
from vaegan_jax.sharding import training_mesh
from vaegan_jax.rng import member_keys
from vaegan_jax.steps import STAGES, create_states, make_train_step, member_loss
from vaegan_jax.training import resolve_image_size, run_training

from conftest import assert_trees_identical, checkpoint_arrays, flat_arrays

CHOOSING_KL = [
    "model.cognitive_hidden=0", "train.cognitive_init=ridge", "loss.kl_weight=-1", "loss.kl_candidates=0.25,4",
    "train.choice_folds=4", "train.selected_voxels=-1", "train.voxel_candidates=4,0", "inference.temperature=-1",
    "inference.temperature_candidates=0",
]
QUIET = {"progress": False, "log": lambda message: None}


@pytest.fixture(scope="module")
def choosing_kl(tiny_config: Config) -> Config:
    return config_lib.override(tiny_config, CHOOSING_KL)


def test_stage_one_holds_each_seed_once_per_kl_weight_with_its_seeds_key(choosing_kl: Config) -> None:
    config = config_lib.override(choosing_kl, ["train.ensemble=2", "train.seed=5"])
    assert (member_count(config, 1), member_count(config, 2)) == (4, 2)
    assert member_origins(config, 1) == [{"seed": s, "kl_weight": w} for w in (0.25, 4.0) for s in (5, 6)]
    assert member_origins(config, 2) == [{"seed": 5}, {"seed": 6}]
    keys = jax.random.key_data(member_keys(config, 1))
    np.testing.assert_array_equal(keys[:2], keys[2:])
    np.testing.assert_array_equal(keys[:2], jax.random.key_data(member_keys(config, 2)))
    np.testing.assert_array_equal(member_loss(config, 1)["kl_weight"], [0.25, 0.25, 4.0, 4.0])
    assert member_loss(config, 2) == {}
    fixed = config_lib.override(config, ["loss.kl_weight=4"])
    assert member_count(fixed, 1) == 2 and member_loss(fixed, 1) == {}


@pytest.mark.parametrize("assignments", [
    ["loss.kl_candidates="], ["train.epochs=0,1,1"], ["loss.kl_weight=-2"], ["loss.kl_candidates=-1,4"],
    ["loss.kl_candidates=4,4"],
    ["train.cognitive_init=random", "model.cognitive_hidden=16"], ["train.epochs=5,1,1", "train.snapshots=2"],
])
def test_impossible_kl_choices_are_refused(choosing_kl: Config, assignments: list[str]) -> None:
    with pytest.raises(ConfigError):
        config_lib.override(choosing_kl, assignments)


@pytest.mark.parametrize("updates", ["sequential", "simultaneous"])
def test_a_members_own_kl_weight_trains_it_as_that_fixed_weight_would(choosing_kl: Config, dataset: Dataset,
                                                                      updates: str) -> None:
    config = resolve_image_size(config_lib.override(choosing_kl, [f"train.updates={updates}"]), dataset)
    stage = STAGES[0]
    states = create_states(config, dataset.n_voxels, jax.random.key(0))
    batch, key = {"image": to_model_images(dataset.train.images[:5], config.model.image_size)}, jax.random.key(1)
    step = jax.jit(make_train_step(config, stage))
    fixed = config_lib.override(config, ["loss.kl_weight=4"])
    want, want_metrics = jax.jit(make_train_step(fixed, stage))(states, batch, key)
    got, got_metrics = step(states, batch, key, {"kl_weight": jnp.float32(4.0)})
    assert_trees_identical(flat_arrays((got, got_metrics)), flat_arrays((want, want_metrics)))
    # The weight matters: the two variants' encoders move apart from the same start.
    low, high = (step(states, batch, key, {"kl_weight": jnp.float32(w)})[0]["visual_encoder"].params for w in (0.25, 4.0))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(low), jax.tree.leaves(high)))


@pytest.fixture(scope="module")
def kl_run(choosing_kl: Config, dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    config = config_lib.override(choosing_kl, ["train.epochs=1,1,0"])
    out = tmp_path_factory.mktemp("kl") / "run"
    run_training(config, dataset, out, **QUIET)
    return out, config


@pytest.mark.slow
def test_the_run_keeps_the_variant_that_cross_validates_best_and_records_it(kl_run: tuple[Path, Config]) -> None:
    run, _ = kl_run
    choices_json = json.loads((run / "choices.json").read_text())
    record = choices_json["stage1_prior"]
    rows = {row["kl_weight"]: row for row in record["candidates"]}
    assert set(rows) == {0.25, 4.0}
    best = max(rows.values(), key=lambda row: row["pcc"])
    assert record["chosen"]["loss.kl_weight"] == best["kl_weight"]
    assert (record["trials"], record["folds"]) == ("fit", 4)
    # The kept variant's own best voxel count goes on with it.
    assert choices_json["chosen"]["train.selected_voxels"] == best["selected_voxels"]
    assert max(row["pcc"] for row in choices_json["candidates"]) == best["pcc"]
    saved = config_lib.from_dict(json.loads((run / "config.json").read_text()))
    assert (saved.loss.kl_weight, saved.train.selected_voxels) == (best["kl_weight"], best["selected_voxels"])
    assert load_checkpoint(run / "checkpoints" / "2").arrays.states["generator"].step.shape == (1,)


@pytest.mark.slow
def test_a_run_killed_between_the_kl_choice_and_stage_two_resumes_to_the_same_end(
    kl_run: tuple[Path, Config], dataset: Dataset, tmp_path: Path
) -> None:
    run, config = kl_run
    stopped = tmp_path / "run"
    interrupt = threading.Event()
    interrupt.set()
    with pytest.raises(Interrupted):
        run_training(config, dataset, stopped, interrupt=interrupt, **QUIET)
    assert load_checkpoint(stopped / "checkpoints" / "1").meta.config.loss.kl_weight == -1
    # As if it had gone on to write its choices and been killed before stage II's first checkpoint: config.json
    # holds them, the newest checkpoint (stage I's end) both variants.
    shutil.copy(run / "config.json", stopped / "config.json")
    run_training(config, dataset, stopped, resume=True, **QUIET)
    saved = config_lib.from_dict(json.loads((run / "config.json").read_text()))
    template = abstract_tree(saved, dataset.n_voxels, training_mesh(1, saved.train.batch_size), 2)
    assert_trees_identical(checkpoint_arrays(stopped, template, 2), checkpoint_arrays(run, template, 2))
    assert json.loads((stopped / "choices.json").read_text()) == json.loads((run / "choices.json").read_text())


@pytest.mark.slow
def test_the_kept_variant_trains_as_a_run_with_its_weight_fixed(
    kl_run: tuple[Path, Config], dataset: Dataset, tmp_path: Path
) -> None:
    run, config = kl_run
    chosen = json.loads((run / "config.json").read_text())["loss"]["kl_weight"]
    fixed = config_lib.override(config, [f"loss.kl_weight={chosen}", "train.epochs=1,0,0"])
    run_training(fixed, dataset, tmp_path / "fixed", **QUIET)
    # Stage II leaves the image path as stage I handed it on, there beside the other variant, here alone
    # (equal up to float rounding: the variants ran vmapped, the fixed run alone). The encoder, which the KL
    # weight drives, agrees to 1e-6; G, trained against D for an epoch, amplifies the rounding to ~3e-2 on
    # one CPU (2026-12-01), as test_ensemble.py describes (another seed is at ~1). Biases are left out: those
    # feeding a BatchNorm are rounding alone there.
    got, want = (load_checkpoint(folder / "checkpoints" / str(step)).arrays.states
                 for folder, step in ((run, 2), (tmp_path / "fixed", 1)))
    for name, tolerance in (("visual_encoder", 1e-4), ("generator", 0.1)):
        for path, leaf in flat_arrays(want[name].params).items():
            if not path.endswith("['bias']"):
                distance = np.linalg.norm(flat_arrays(got[name].params)[path] - leaf) / np.linalg.norm(leaf)
                assert distance < tolerance, (name, path, distance)
