"""Voxel selection: which voxels it keeps, that only the fit trials decide, and that runs record it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vaegan_jax import config as config_lib
from vaegan_jax.data import Dataset, Trials
from vaegan_jax.data.prepare import prepare, select_voxels, selection_size
from vaegan_jax.errors import ConfigError


def _images_and_voxels(seed: int = 0, n: int = 60, informative: int = 8, noise: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Random 6x6 images; the first `informative` voxels respond to one pixel each, the rest are noise."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(n, 6, 6))
    images[:, 0, :] = 0.0
    signal = images.reshape(n, -1)[:, 6 : 6 + informative] + rng.normal(0.0, 0.1, (n, informative))
    return images, np.concatenate([signal, rng.normal(size=(n, noise))], axis=1)


def test_the_voxels_that_follow_a_pixel_are_kept() -> None:
    images, voxels = _images_and_voxels()
    np.testing.assert_array_equal(select_voxels(voxels, images, 8), np.arange(8))
    # Ascending order, whatever the strength ranking: the model's input layout stays the file's.
    kept = select_voxels(voxels, images, 12)
    assert np.all(np.diff(kept) > 0) and set(range(8)) <= set(kept)


def test_zero_or_too_many_keeps_every_voxel() -> None:
    images, voxels = _images_and_voxels()
    for n in (0, voxels.shape[1], voxels.shape[1] + 5):
        np.testing.assert_array_equal(select_voxels(voxels, images, n), np.arange(voxels.shape[1]))
        assert selection_size(voxels.shape[1], n) == voxels.shape[1]
    assert selection_size(voxels.shape[1], 3) == 3


def test_a_constant_voxel_is_never_preferred_to_a_responsive_one() -> None:
    images, voxels = _images_and_voxels()
    voxels[:, 0] = 7.0
    kept = select_voxels(voxels, images, 7)
    assert 0 not in kept and np.array_equal(kept, np.arange(1, 8))


def test_only_the_fit_trials_decide(dataset: Dataset) -> None:
    first = prepare(dataset, 4, 0, selected_voxels=5)
    assert len(first.voxel_selection) == 5
    assert first.model_voxels(first.val).shape == (len(first.val), 5)
    np.testing.assert_array_equal(first.model_voxels(first.test), first.test.voxels[:, first.voxel_selection])

    # On the validation and test trials, every voxel left out copies a pixel at a thousand times the scale:
    # counted with the fit trials, they would correlate with those pixels better than any voxel does now.
    # (Selection ranks correlations, which no per-voxel scaling changes: test_dataset checks the z-scoring.)
    left_out = np.setdiff1d(np.arange(dataset.n_voxels), first.voxel_selection)
    val_rows = np.isin(dataset.train.indices, first.val.indices)

    def leaky(trials: Trials, rows: np.ndarray) -> Trials:
        voxels = trials.voxels.copy()
        pixels = trials.images[rows].reshape(int(rows.sum()), -1)
        brightest = np.argsort(-pixels.var(axis=0))[: len(left_out)]
        voxels[np.ix_(rows, left_out)] = 1000.0 * pixels[:, brightest]
        return trials.with_voxels(voxels)

    poisoned = dataclasses.replace(
        dataset, train=leaky(dataset.train, val_rows), test=leaky(dataset.test, np.ones(len(dataset.test), bool))
    )
    np.testing.assert_array_equal(prepare(poisoned, 4, 0, selected_voxels=5).voxel_selection, first.voxel_selection)

    fit_rows = ~val_rows
    rewired_train = dataset.train.voxels.copy()
    rewired_train[fit_rows] = rewired_train[fit_rows][:, ::-1]
    rewired = dataclasses.replace(dataset, train=dataset.train.with_voxels(rewired_train))
    assert not np.array_equal(prepare(rewired, 4, 0, selected_voxels=5).voxel_selection, first.voxel_selection)


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ConfigError, match="selected_voxels must be a count"):
        config_lib.override(config_lib.preset("tiny"), ["train.selected_voxels=-2"])
    # -1 asks the run to choose, which needs the ridge-initialised linear encoder that tiny lacks.
    with pytest.raises(ConfigError, match="cognitive_init=ridge"):
        config_lib.override(config_lib.preset("tiny"), ["train.selected_voxels=-1"])
