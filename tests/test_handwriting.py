"""The shipped handwritten digits and the image-only prior built from them for data sets without extras."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vaegan_jax import config as config_lib
from vaegan_jax.config import Config
from vaegan_jax.data import handwriting, load_dataset
from vaegan_jax.data.dataset import Dataset, Trials, make_dataset
from vaegan_jax.data.prepare import image_only_extras, prepare
from vaegan_jax.runs import RunPaths
from vaegan_jax.training import Trainer


def pixel_pcc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Pearson correlations of flattened images, with numpy's own corrcoef."""
    rows = np.concatenate([a.reshape(len(a), -1), b.reshape(len(b), -1)]).astype(np.float64)
    return np.corrcoef(rows)[: len(a), len(a) :]


def test_shipped_digits_are_upright_sixes_and_nines() -> None:
    images, labels = handwriting.load_digits()
    assert images.shape == (1000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.repeat([handwriting.SIX, handwriting.NINE], 500))
    sixes, nines = images[labels == handwriting.SIX].mean(axis=0), images[labels == handwriting.NINE].mean(axis=0)
    assert sixes[14:].sum() > 1.2 * sixes[:14].sum()
    # A nine's loop sits on top: its upper half holds more of its ink than a six's does.
    assert nines[:14].sum() / nines.sum() > 1.2 * sixes[:14].sum() / sixes.sum()
    assert len({image.tobytes() for image in images}) == 1000


def test_near_duplicates_catch_copies_and_spare_other_digits() -> None:
    images, _ = handwriting.load_digits()
    rng = np.random.default_rng(0)
    stimuli = images[[3, 600, 999]].astype(np.float64)
    copies = np.stack([
        stimuli[0],
        np.roll(stimuli[1], 1, axis=1),
        np.clip(stimuli[2] + rng.integers(-3, 4, stimuli[2].shape), 0, 255),
    ])
    assert handwriting.near_duplicates(copies, stimuli).all()
    flagged = handwriting.near_duplicates(images, stimuli)
    # Only the stimuli themselves: no other shipped digit is that close to them.
    assert np.flatnonzero(flagged).tolist() == [3, 600, 999]
    assert not handwriting.near_duplicates(images, stimuli[:, :14, :14]).any()


def test_prior_never_holds_a_copy_of_a_stimulus() -> None:
    images, _ = handwriting.load_digits()
    rng = np.random.default_rng(1)
    picks = rng.choice(1000, 40, replace=False)
    stimuli = images[picks].astype(np.float32) / 255
    stimuli[:10] = np.roll(stimuli[:10], -1, axis=2)
    prior = handwriting.prior_without_stimuli(stimuli, size=1200)
    assert prior.images.shape == (1200, 28, 28) and prior.images.dtype == np.float32
    assert prior.images.min() >= 0 and prior.images.max() <= 1
    assert prior.n_removed >= 40 and prior.n_real == 1000 - prior.n_removed
    assert prior.n_real + prior.n_elastic == 1200
    # Checked with numpy's corrcoef, every shift of at most one pixel: nothing close to a stimulus is left.
    worst = max(
        pixel_pcc(np.roll(prior.images, (dy, dx), axis=(1, 2)), stimuli).max()
        for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    )
    assert worst < handwriting.NEAR_DUPLICATE_PCC
    assert "removed" in prior.describe() and str(prior.n_removed) in prior.describe()


def test_elastic_variants_stay_digits_but_differ() -> None:
    images, _ = handwriting.load_digits()
    variants = handwriting.elastic_variants(np.random.default_rng(0), images[:50])
    assert variants.dtype == np.uint8 and variants.shape == (50, 28, 28)
    similarity = np.diag(pixel_pcc(variants, images[:50]))
    assert np.all(similarity < 0.99) and np.median(similarity) > 0.5


@pytest.fixture(scope="module")
def digits_dataset() -> Dataset:
    """A 28x28 data set of 30 shipped digits (24 train, 6 test) with random voxels and no extras."""
    images, labels = handwriting.load_digits()
    picks = np.r_[0:15, 500:515]
    rng = np.random.default_rng(0)
    pixels, voxels = images[picks].astype(np.float32) / 255, rng.normal(size=(30, 8)).astype(np.float32)
    train, test = np.r_[0:12, 15:27], np.r_[12:15, 27:30]
    return make_dataset(
        "digits", "test", Trials(pixels[train], voxels[train], labels[picks][train].astype(np.int64), train),
        Trials(pixels[test], voxels[test], labels[picks][test].astype(np.int64), test), None, "0" * 64,
    )


def test_a_data_set_without_extras_gets_the_shipped_prior(digits_dataset: Dataset) -> None:
    extras, source = image_only_extras(digits_dataset, shipped_prior=True)
    assert extras is not None and len(extras) == handwriting.PRIOR_SIZE
    assert "30 removed" in source
    stimuli = np.concatenate([digits_dataset.train.images, digits_dataset.test.images])
    assert pixel_pcc(extras, stimuli).max() < handwriting.NEAR_DUPLICATE_PCC
    assert image_only_extras(digits_dataset, shipped_prior=False) == (None, "none")
    prepared = prepare(digits_dataset, 4, 0, shipped_prior=True)
    assert prepared.extra_images is not None and prepared.extra_source == source


def test_own_extras_win_and_other_sizes_get_none(digits_dataset: Dataset) -> None:
    own = np.zeros((3, 28, 28), np.float32)
    extras, source = image_only_extras(dataclasses.replace(digits_dataset, extra_images=own), shipped_prior=True)
    np.testing.assert_array_equal(extras, own)
    assert "own 3 (0 removed" in source
    small = dataclasses.replace(
        digits_dataset,
        train=dataclasses.replace(digits_dataset.train, images=digits_dataset.train.images[:, :16, :16]),
        test=dataclasses.replace(digits_dataset.test, images=digits_dataset.test.images[:, :16, :16]),
    )
    assert image_only_extras(small, shipped_prior=True) == (None, "none")


def test_own_extras_lose_their_copies_of_the_stimuli(digits_dataset: Dataset) -> None:
    # A test stimulus shifted by a pixel and a training stimulus as it is would let stage I learn them; a digit
    # merely close to one (a near duplicate by the shipped prior's looser measure) stays.
    images, _ = handwriting.load_digits()
    stimuli = np.concatenate([digits_dataset.train.images, digits_dataset.test.images])
    strangers = images[100:104].astype(np.float32) / 255
    close = np.clip(np.roll(stimuli[2], 1, axis=0) + np.roll(stimuli[2], 1, axis=1) * 0.2, 0, 1)
    assert handwriting.near_duplicates(close[None], stimuli)[0] and not handwriting.near_duplicates(
        close[None], stimuli, handwriting.COPY_PCC)[0]
    strangers = np.concatenate([strangers, close[None]])
    shifted_test = np.roll(digits_dataset.test.images[1], 1, axis=1)
    own = np.concatenate([strangers[:2], shifted_test[None], digits_dataset.train.images[:1], strangers[2:]])
    extras, source = image_only_extras(dataclasses.replace(digits_dataset, extra_images=own), shipped_prior=True)
    np.testing.assert_array_equal(extras, strangers)
    assert "own 7 (2 removed as copies of its stimuli)" in source
    prepared = prepare(dataclasses.replace(digits_dataset, extra_images=own), 4, 0)
    np.testing.assert_array_equal(prepared.extra_images, strangers)


def test_own_extras_that_all_copy_stimuli_give_way_to_the_shipped_prior(digits_dataset: Dataset) -> None:
    copies = digits_dataset.test.images
    replaced = dataclasses.replace(digits_dataset, extra_images=copies)
    extras, source = image_only_extras(replaced, shipped_prior=True)
    assert extras is not None and len(extras) == handwriting.PRIOR_SIZE
    assert source.startswith(f"the data set's own {len(copies)} were all copies") and "shipped MNIST" in source
    extras, source = image_only_extras(replaced, shipped_prior=False)
    assert extras is None and source.endswith("; none")


def test_a_dgmm_file_of_doubles_trains_stage_one_on_the_shipped_prior(tmp_path: Path, tiny_config: Config) -> None:
    # The real DGMM file: every variable of class double, no image-only extras.
    images, labels = handwriting.load_digits()
    picks = np.r_[0:45, 500:545, 45:50, 545:550]
    rows = images[picks].transpose(0, 2, 1).reshape(100, -1).astype(np.float64)
    voxels = np.random.default_rng(0).normal(size=(100, 12))
    path = tmp_path / "digit69_28x28.mat"
    scipy.io.savemat(path, {
        "stimTrn": rows[:90], "stimTest": rows[90:], "fmriTrn": voxels[:90], "fmriTest": voxels[90:],
        "labelTrn": labels[picks][:90, None].astype(np.float64), "labelTest": labels[picks][90:, None].astype(np.float64),
    })
    dataset = load_dataset(path)
    assert dataset.extra_images is None
    config = config_lib.override(tiny_config, ["train.use_extra_images=true"])
    trainer = Trainer(config, dataset, RunPaths(tmp_path / "run"), progress=False)
    assert "100 removed" in trainer.data.extra_source
    assert len(trainer.arrays["images_only"]["image"]) == len(trainer.data.fit) + handwriting.PRIOR_SIZE
    assert "shipped MNIST" in trainer.summary()
    off = Trainer(config_lib.override(config, ["train.shipped_prior=false"]), dataset, RunPaths(tmp_path / "off"))
    assert len(off.arrays["images_only"]["image"]) == len(off.data.fit)


def test_copies_are_found_in_every_block_of_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    images, _ = handwriting.load_digits()
    stimuli, candidates = images[:10], images[10:45].copy()
    candidates[[3, 17, 34]] = stimuli[[0, 4, 9]]
    expected = handwriting.near_duplicates(candidates, stimuli)
    assert set(np.flatnonzero(expected)) >= {3, 17, 34}
    monkeypatch.setattr(handwriting, "_BLOCK", 4)
    np.testing.assert_array_equal(handwriting.near_duplicates(candidates, stimuli), expected)
