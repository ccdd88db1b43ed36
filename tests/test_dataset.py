"""Validation carving and voxel scaling: stratified, seeded, and blind to the test split."""

from __future__ import annotations

import numpy as np
import pytest

from vaegan_jax.data import Dataset, Trials, VoxelScaler, carve_validation, from_donders_mapping
from vaegan_jax.data.prepare import prepare
from vaegan_jax.errors import DataError


def donders_mapping(seed: int = 0) -> dict[str, np.ndarray]:
    """Donders-layout arrays: 100 trials of two classes, 28x28, 30 voxels with distinct scales."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.01, 3.0, 30)
    return {
        "X": rng.integers(0, 256, size=(100, 784), dtype=np.uint8),
        "Y": 5.0 + rng.normal(size=(100, 30)) * scales,
        "labels": np.repeat([1, 2], 50)[:, None],
    }


def make_data(seed: int = 0) -> Dataset:
    """The data set built from `donders_mapping` with the standard split."""
    return from_donders_mapping(donders_mapping(seed), "memory", "0" * 64)


def test_carve_validation_is_stratified_and_disjoint() -> None:
    data = make_data()
    fit, val = carve_validation(data.train, n_val=10, seed=0)
    assert len(fit) == 80 and len(val) == 10
    assert np.bincount(val.labels).tolist() == [0, 5, 5]
    assert set(fit.indices).isdisjoint(val.indices)
    assert sorted(np.concatenate([fit.indices, val.indices]).tolist()) == sorted(data.train.indices.tolist())
    assert set(val.indices).isdisjoint(data.test.indices)
    assert set(fit.indices).isdisjoint(data.test.indices)
    for part in (fit, val):
        original = {int(i): k for k, i in enumerate(data.train.indices)}
        rows = [original[int(i)] for i in part.indices]
        np.testing.assert_array_equal(part.voxels, data.train.voxels[rows])
        np.testing.assert_array_equal(part.images, data.train.images[rows])


def test_carve_validation_keeps_class_proportions_when_unbalanced() -> None:
    data = make_data()
    keep = np.r_[np.arange(45), np.arange(45, 60)]
    unbalanced = data.train.subset(keep)
    _, val = carve_validation(unbalanced, n_val=8, seed=1)
    assert np.bincount(val.labels, minlength=3).tolist() == [0, 6, 2]


def test_carve_validation_is_seeded() -> None:
    train = make_data().train
    first = carve_validation(train, n_val=10, seed=3)[1].indices
    again = carve_validation(train, n_val=10, seed=3)[1].indices
    other = carve_validation(train, n_val=10, seed=4)[1].indices
    np.testing.assert_array_equal(first, again)
    assert first.tolist() != other.tolist()


def test_carve_validation_without_labels_and_edge_sizes() -> None:
    train = make_data().train
    unlabelled = Trials(train.images, train.voxels, None, train.indices)
    fit, val = carve_validation(unlabelled, n_val=7, seed=0)
    assert len(val) == 7 and len(fit) == 83 and val.labels is None
    fit, val = carve_validation(train, n_val=0, seed=0)
    assert fit is train and len(val) == 0
    with pytest.raises(DataError):
        carve_validation(train, n_val=len(train), seed=0)


def test_a_validation_split_of_every_training_trial_is_refused_naming_the_file() -> None:
    data = from_donders_mapping(donders_mapping(), "mine.mat", "0" * 64)
    with pytest.raises(DataError, match="^mine.mat: train.val_trials 90 leaves no fit trials"):
        prepare(data, val_trials=90, seed=0)


def test_prepare_z_scores_every_split_with_statistics_of_the_fit_trials_alone() -> None:
    # Validation and test voxels a thousand times larger and far off: any of them in the statistics would show.
    arrays = donders_mapping()
    data = from_donders_mapping(arrays, "memory", "0" * 64)
    _, val = carve_validation(data.train, n_val=10, seed=0)
    wild = np.concatenate([val.indices, data.test.indices])
    arrays["Y"][wild] = np.random.default_rng(9).normal(1e4, 1e3, size=(len(wild), 30))
    prepared = prepare(from_donders_mapping(arrays, "memory", "0" * 64), val_trials=10, seed=0)
    assert np.array_equal(prepared.val.indices, val.indices)
    fit_rows = np.setdiff1d(np.arange(100), wild)
    assert np.array_equal(np.sort(prepared.fit.indices), fit_rows)
    raw = arrays["Y"].astype(np.float32)
    mean, sd = raw[fit_rows].astype(np.float64).mean(axis=0), raw[fit_rows].astype(np.float64).std(axis=0)
    np.testing.assert_allclose(prepared.scaler.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(prepared.scaler.std, sd, rtol=1e-5)
    for trials in (prepared.fit, prepared.val, prepared.test):
        np.testing.assert_allclose(trials.voxels, (raw[trials.indices] - mean) / sd, rtol=1e-4, atol=1e-4)


def test_z_scored_training_voxels_have_mean_zero_sd_one() -> None:
    train = make_data().train
    scaler = VoxelScaler.fit(train.voxels)
    z = scaler.transform(train.voxels)
    assert z.dtype == np.float32
    # float32 voxels at an offset of 500 sd carry about 1e-5 sd of rounding.
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-4)


def test_voxel_scaler_gives_constant_voxels_unit_scale() -> None:
    voxels = np.ones((10, 3), dtype=np.float32)
    voxels[:, 1] = np.arange(10)
    scaler = VoxelScaler.fit(voxels)
    assert scaler.std[0] == 1.0 and scaler.std[2] == 1.0
    z = scaler.transform(voxels)
    assert np.all(np.isfinite(z)) and np.all(z[:, 0] == 0)
