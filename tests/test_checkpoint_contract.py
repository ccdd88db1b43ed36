"""The checkpoint contract (one array layout, typed metadata, a clear error for older formats) and the RNG streams."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from vaegan_jax import rng
from vaegan_jax.checkpoints import (
    FORMAT_VERSION, NO_SCORE, CheckpointMeta, CheckpointStore, DataRecord, Split, abstract_tree, unpack,
)
from vaegan_jax.config import Config
from vaegan_jax.data import Dataset
from vaegan_jax.data.origin import DataOrigin
from vaegan_jax.errors import CheckpointError
from vaegan_jax.runs import RunPaths
from vaegan_jax.steps import STAGES, create_members, create_states, take_member
from vaegan_jax.training import Trainer

from conftest import flat_arrays


@pytest.fixture(scope="module")
def trainer(tiny_config: Config, dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """An untrained trainer of the tiny preset: its states are what a checkpoint of it holds."""
    return Trainer(tiny_config, dataset, RunPaths(tmp_path_factory.mktemp("contract")), progress=False)


def _layout(tree) -> dict[str, tuple]:
    """Path -> (shape, dtype, partition spec) of every array (the train states' optimisers and apply functions aside)."""
    return {jax.tree_util.keystr(path): (leaf.shape, leaf.dtype, leaf.sharding.spec)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_the_abstract_tree_is_the_layout_training_saves(trainer: Trainer) -> None:
    abstract = abstract_tree(trainer.config, trainer.dataset.n_voxels, trainer.mesh)
    assert _layout(abstract) == _layout(trainer.checkpoint_arrays())


def test_a_checkpoint_restores_into_the_abstract_tree_every_part_it_saved(trainer: Trainer, tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, trainer.checkpoint_arrays(), trainer.checkpoint_meta(STAGES[1], 1).to_json(), None)
    store.wait()
    tree, _ = store.restore(1, abstract_tree(trainer.config, trainer.dataset.n_voxels, trainer.mesh))
    store.close()
    restored = unpack(tree)
    np.testing.assert_array_equal(restored.scaler.mean, trainer.data.scaler.mean)
    np.testing.assert_array_equal(restored.scaler.std, trainer.data.scaler.std)
    np.testing.assert_array_equal(jax.random.key_data(restored.keys), jax.random.key_data(trainer.keys))
    expected, got = flat_arrays(trainer.states), flat_arrays(restored.states)
    assert expected.keys() == got.keys() and all(np.array_equal(expected[k], got[k]) for k in expected)


def test_a_nan_score_is_no_score_and_never_the_best(trainer: Trainer, tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")

    def save(step: int, score: float) -> None:
        store.save(step, trainer.checkpoint_arrays(), trainer.checkpoint_meta(STAGES[2], step).to_json(), score)

    save(1, math.nan)
    store.wait()
    assert store.read_meta(1)["val_score"] == NO_SCORE and store.best_score() is None
    for step, score in ((2, 0.3), (3, math.nan), (4, 0.2)):
        save(step, score)
    store.wait()
    assert store.best_step() == 2 and store.best_score() == 0.3
    store.close()


def test_metadata_round_trips_through_json(trainer: Trainer) -> None:
    meta = dataclasses.replace(trainer.checkpoint_meta(STAGES[1], 2), val_score=0.5)
    document = {**meta.to_json(), "val_score": 0.5, "format_version": FORMAT_VERSION}
    assert CheckpointMeta.from_json(document, Path("ckpt")) == meta
    assert document["data"]["origin"] == {"file": str(Path(trainer.dataset.source).absolute()), "synthetic_seed": None}
    assert document["split"]["voxels"] == trainer.data.voxel_selection.tolist()


@pytest.mark.parametrize("missing", ["config", "data", "split"])
def test_metadata_without_a_part_is_a_one_line_error(trainer: Trainer, missing: str) -> None:
    document = trainer.checkpoint_meta(STAGES[1], 2).to_json()
    del document[missing]
    with pytest.raises(CheckpointError, match=f"ckpt: the checkpoint records no {missing}"):
        CheckpointMeta.from_json(document, Path("ckpt"))


def test_a_format_1_checkpoint_is_refused_with_the_version_each_side(trainer: Trainer, tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, trainer.checkpoint_arrays(), {}, None)
    store.wait()
    meta_file = tmp_path / "checkpoints" / "1" / "meta" / "metadata"
    meta_file.write_text(meta_file.read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 1'))
    with pytest.raises(CheckpointError, match=f"checkpoint format 1 was written by another version of vaegan_jax; "
                                              f"this one reads formats 2, 3, {FORMAT_VERSION}"):
        store.read_meta(1)
    store.close()


def test_format_2_metadata_reads_with_the_origin_its_source_names(trainer: Trainer, tmp_path: Path) -> None:
    # Format 2 recorded the data as name, source, fingerprint, n_voxels and image_size, without an origin.
    document = {**trainer.checkpoint_meta(STAGES[1], 2).to_json(), "format_version": 2, "val_score": 0.5}
    del document["data"]["origin"]
    meta = CheckpointMeta.from_json(document, Path("ckpt"))
    assert meta.data.origin == DataOrigin.of_file(trainer.dataset.source) and meta.data.origin.load()
    document["data"]["source"] = "embedded synthetic (seed 0)"
    assert not CheckpointMeta.from_json(document, Path("ckpt")).data.origin.known


def test_the_data_record_says_how_to_load_the_data_again(dataset: Dataset) -> None:
    record = DataRecord.of(dataset, DataOrigin.guess(dataset))
    assert record.origin.load().fingerprint == dataset.fingerprint
    assert DataOrigin(synthetic_seed=3).load().fingerprint == DataRecord.of(
        DataOrigin(synthetic_seed=3).load(), DataOrigin()).fingerprint
    assert not DataOrigin().known and DataOrigin(synthetic_seed=0).known


def test_split_records_every_index_as_a_plain_int(trainer: Trainer) -> None:
    split = Split.of(trainer.data)
    assert all(type(i) is int for part in dataclasses.astuple(split) for i in part)


def test_the_rng_streams_are_distinct_and_init_is_what_create_members_uses(tiny_config: Config) -> None:
    keys = rng.member_keys(tiny_config)
    drawn = {
        "init": rng.init(keys[0]),
        "train 1/0": rng.train(keys, 1, 0)[0], "train 1/1": rng.train(keys, 1, 1)[0], "train 2/0": rng.train(keys, 2, 0)[0],
        "validate 0": rng.validate(keys, 0)[0], "validate 1": rng.validate(keys, 1)[0], "decode": rng.decode(keys)[0],
        # No stream draws from the base key itself, nor augments with a key that a step's own split hands out
        # (fold_in(key, i) is split(key, n)[i] under jax's partitionable threefry).
        "base": keys[0], "step": jax.random.key(99),
    }
    drawn.update({f"step's own {k}": child for k, child in enumerate(jax.random.split(drawn["step"], 3))})
    drawn["augment"] = rng.augment(drawn["step"])
    data = {name: tuple(np.asarray(jax.random.key_data(key)).tolist()) for name, key in drawn.items()}
    assert len(set(data.values())) == len(data), data
    members = take_member(create_members(tiny_config, 16, keys), 0)
    alone = create_states(tiny_config, 16, rng.init(keys[0]))
    for name in ("generator", "cognitive_encoder"):
        np.testing.assert_array_equal(members[name].params["mu" if name == "cognitive_encoder" else "Dense_0"]["kernel"],
                                      alone[name].params["mu" if name == "cognitive_encoder" else "Dense_0"]["kernel"])
