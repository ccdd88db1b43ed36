"""Stage-I snapshots as members: a snapshot ensemble that costs no further stage-I training (config, choices,
training), grown from the weight averages stage I hands on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import leaves
from vaegan_jax import choices, load_run, metrics
from vaegan_jax import config as config_lib
from vaegan_jax.checkpoints import load_checkpoint
from vaegan_jax.config import Config, member_count, member_origins, most_snapshots, snapshot_epochs
from vaegan_jax.data import Dataset
from vaegan_jax.data.prepare import prepare
from vaegan_jax.errors import ConfigError
from vaegan_jax.rng import member_keys
from vaegan_jax.steps import AVERAGED, create_states, weights_of
from vaegan_jax.training import resolve_image_size, run_training

from test_choices import CHOOSING


def test_members_of_each_stage_and_their_origins(tiny_config: Config) -> None:
    config = config_lib.override(tiny_config, ["train.epochs=9,1,1", "train.ensemble=2", "train.snapshots=3",
                                               "train.snapshot_every=2", "train.seed=5"])
    train = config.train
    assert snapshot_epochs(train) == (9, 7, 5)
    assert (member_count(config, 1), member_count(config, 2), member_count(config, 3)) == (2, 6, 6)
    assert member_origins(config, 1) == [{"seed": 5}, {"seed": 6}]
    assert member_origins(config, 3) == [{"seed": s, "stage1_epoch": e} for e in (9, 7, 5) for s in (5, 6)]
    # Stage I's members keep their keys when the snapshots join them.
    first = jax.random.key_data(member_keys(config, 1))
    np.testing.assert_array_equal(jax.random.key_data(member_keys(config, 3))[:2], first)


@pytest.mark.parametrize("assignments", [
    ["train.snapshots=0"], ["train.snapshots=-2"], ["train.snapshot_every=0"], ["train.snapshot_candidates=0,1"],
    ["train.epochs=4,1,1", "train.snapshots=3", "train.snapshot_every=2"],
])
def test_impossible_snapshot_settings_are_refused(tiny_config: Config, assignments: list[str]) -> None:
    with pytest.raises(ConfigError):
        config_lib.override(tiny_config, assignments)


def test_a_short_stage_one_offers_fewer_snapshots_to_choose_from(tiny_config: Config) -> None:
    choosing = ["train.snapshots=-1", "train.snapshot_candidates=1,2,3", "train.snapshot_every=2"]
    for epochs, most in (("1,1,1", 1), ("4,1,1", 2), ("5,1,1", 3), ("0,1,1", 1)):
        train = config_lib.override(tiny_config, [*CHOOSING, *choosing, f"train.epochs={epochs}"]).train
        assert most_snapshots(train) == most
        assert len(snapshot_epochs(train)) == most


def test_a_candidate_of_s_snapshots_averages_the_latest_s(tiny_config: Config, dataset: Dataset) -> None:
    config = resolve_image_size(config_lib.override(tiny_config, [
        *CHOOSING, "train.voxel_candidates=4", "inference.temperature_candidates=0",
        "train.snapshots=-1", "train.snapshot_candidates=1,2", "train.snapshot_every=1", "train.epochs=2,1,1",
    ]), dataset)
    data = prepare(dataset, 4, 0)
    # Two differently initialised networks stand for the end of stage I and the snapshot before it.
    members = [create_states(config, dataset.n_voxels, jax.random.key(seed)) for seed in (0, 1)]
    keys = list(member_keys(config))[:1] * 2
    choice = choices.choose(config, members, keys, data.fit.voxels, data.fit.images)
    decoded = choices.out_of_fold_reconstructions(config, members, keys, data.fit.voxels, data.fit.images, (4,), (0.0,), 4)
    by_count = {row["snapshots"]: row["pcc"] for row in choice.candidates}
    assert set(by_count) == {1, 2}
    for count, pooled in ((1, decoded[(4, 0.0)][0]), (2, decoded[(4, 0.0)].mean(axis=0))):
        assert by_count[count] == pytest.approx(float(np.mean(metrics.reconstruction_metrics(data.fit.images, pooled)["pcc"])))
    assert choice.snapshots == max(by_count, key=by_count.get)
    assert choice.to_json()["chosen"]["train.snapshots"] == choice.snapshots


@pytest.mark.slow
def test_snapshot_members_grow_from_stage_one_checkpoints_and_survive_a_resume(
    tiny_config: Config, dataset: Dataset, tmp_path: Path
) -> None:
    # Stage I averages the image path's weights (train.weight_average), so what it hands on differs from its
    # last weights and a member grown from the last weights would show.
    config = config_lib.override(tiny_config, [
        *CHOOSING, "train.voxel_candidates=4", "inference.temperature_candidates=1", "train.epochs=2,1,0",
        "train.snapshots=-1", "train.snapshot_candidates=2", "train.snapshot_every=1", "train.weight_average=0.5",
    ])
    run = tmp_path / "run"
    _, report, _ = run_training(config, dataset, run, progress=False, log=lambda message: None)
    assert json.loads((run / "choices.json").read_text())["stage1_epochs"] == [2, 1]
    assert [(m["seed"], m["stage1_epoch"]) for m in report["members"]] == [(0, 2), (0, 1)]

    def saved(step: int) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
        """Each averaged network's weights and moving average as checkpoint `step` holds them."""
        states = load_checkpoint(run / "checkpoints" / str(step)).arrays.states
        return {name: (leaves(weights_of(states[name])), leaves(states[name].average)) for name in AVERAGED}

    stage_one_end, stage_one_earlier, stage_two = saved(2), saved(1), saved(3)
    decoded = load_run(run / "checkpoints" / "2").states
    for name in AVERAGED:
        (last, end), (_, earlier) = stage_one_end[name], stage_one_earlier[name]
        assert any(not np.array_equal(a, w) for a, w in zip(end, last))
        # Stage II leaves the image path alone: member k still holds stage-I epoch 2 - k's average.
        for got, first, second in zip(stage_two[name][0], end, earlier):
            np.testing.assert_array_equal(got, np.concatenate([first, second]))
        # A stage-I checkpoint decodes with what stage I hands on.
        for got, want in zip(leaves(weights_of(decoded[name])), end):
            np.testing.assert_array_equal(got, want)
    # As if killed after the choice and before stage II's checkpoint: the resumed run rebuilds the members.
    shutil.rmtree(run / "checkpoints" / "3")
    _, resumed, _ = run_training(config, dataset, run, resume=True, progress=False, log=lambda message: None)
    assert resumed["checkpoint_step"] == 3 and len(resumed["members"]) == 2
    resumed_stage_two = saved(3)
    for name in AVERAGED:
        for got, want in zip(resumed_stage_two[name][0], stage_two[name][0]):
            np.testing.assert_array_equal(got, want)
    assert resumed["test"]["pcc_fmri"] == pytest.approx(report["test"]["pcc_fmri"], abs=1e-6)
