"""Tests of the embedded stand-in for the '69' data set: shipped MNIST digits and a pRF voxel model."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaegan_jax import metrics
from vaegan_jax.baselines import MeanImageDecoder, RidgeDecoder
from vaegan_jax.data import handwriting, synthetic
from vaegan_jax.data.dataset import VoxelScaler
from vaegan_jax.data.loaders import load_dataset
from vaegan_jax.errors import ConfigError

STANDARD_TEST = np.array([45, 46, 47, 48, 49, 95, 96, 97, 98, 99])


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return synthetic.generate(0)


def test_shapes_dtypes_and_labels(arrays: dict[str, np.ndarray]) -> None:
    assert arrays["X"].shape == (100, 784) and arrays["X"].dtype == np.uint8
    assert arrays["Y"].shape == (100, 3092) and arrays["Y"].dtype == np.float64
    assert arrays["prior"].shape == (2000, 784) and arrays["prior"].dtype == np.uint8
    assert arrays["labels"].shape == (100, 1) and arrays["labels"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["labels"].ravel(), np.repeat([1, 2], 50))
    assert "seed 0" in str(arrays["description"][0])
    assert np.all(np.isfinite(arrays["Y"]))
    # MNIST digits: black background and border, saturated stroke cores.
    assert np.all(arrays["X"].max(axis=1) >= 250)
    assert np.all(arrays["X"].reshape(100, 28, 28, order="F")[:, [0, -1], :] == 0)


def test_deterministic_for_a_seed_and_different_across_seeds(arrays: dict[str, np.ndarray]) -> None:
    synthetic._generate_cached.cache_clear()
    again = synthetic.generate(0)
    for key in ("X", "Y", "labels", "prior"):
        np.testing.assert_array_equal(again[key], arrays[key])
    other = synthetic.generate(1)
    assert not np.array_equal(other["X"], arrays["X"])
    assert not np.array_equal(other["Y"], arrays["Y"])


def test_arrays_are_read_only_and_the_mapping_is_a_copy(arrays: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError):
        arrays["X"][0, 0] = 1
    first = synthetic.generate(0)
    first.pop("Y")
    assert "Y" in synthetic.generate(0)


def test_orientation_sixes_hold_more_ink_in_the_bottom_half(arrays: dict[str, np.ndarray]) -> None:
    upright = arrays["X"].reshape(100, 28, 28, order="F").astype(np.float64)
    sixes = upright[arrays["labels"].ravel() == 1].mean(axis=0)
    nines = upright[arrays["labels"].ravel() == 2].mean(axis=0)
    assert sixes[14:].sum() > sixes[:14].sum()
    assert nines[:14].sum() > nines[14:].sum()


def test_stimuli_are_shipped_digits_of_their_class(arrays: dict[str, np.ndarray]) -> None:
    digits, labels = handwriting.load_digits()
    index = {image.tobytes(): label for image, label in zip(digits, labels)}
    stimuli = arrays["X"].reshape(100, 28, 28, order="F")
    assert [index.get(image.tobytes()) for image in stimuli] == arrays["labels"].ravel().tolist()
    assert len({image.tobytes() for image in stimuli}) == 100


def test_no_extra_image_copies_a_stimulus(arrays: dict[str, np.ndarray]) -> None:
    stimuli = arrays["X"].reshape(100, 28, 28, order="F")
    prior = arrays["prior"].reshape(-1, 28, 28, order="F")
    assert not handwriting.near_duplicates(prior, stimuli).any()
    assert len({row.tobytes() for row in arrays["prior"]}) == 2000
    assert "removed" in str(arrays["description"][0])


def test_voxel_values_resemble_the_real_data(arrays: dict[str, np.ndarray]) -> None:
    y = arrays["Y"]
    per_voxel_sd = y.std(axis=0)
    assert 0.005 < y.mean() < 0.02
    assert 0.015 < y.std() < 0.035
    assert 0.002 < per_voxel_sd.min() < 0.005
    assert 0.005 < np.median(per_voxel_sd) < 0.01
    assert 0.07 < per_voxel_sd.max() < 0.3


def test_load_synthetic_has_the_standard_split() -> None:
    dataset = synthetic.load_synthetic(0)
    assert dataset.name == "synthetic-69"
    assert dataset.source == "embedded synthetic (seed 0)"
    np.testing.assert_array_equal(dataset.test.indices, STANDARD_TEST)
    assert len(dataset.train) == 90 and dataset.n_voxels == 3092 and dataset.image_size == 28
    assert dataset.extra_images is not None and dataset.extra_images.shape == (2000, 28, 28)
    assert dataset.fingerprint != synthetic.load_synthetic(1).fingerprint


def test_ridge_finds_it_about_as_hard_as_the_real_data() -> None:
    # data.md: on the real set ridge scores PCC 0.790 and 2-way identification 0.933; the mean image 0.655.
    dataset = synthetic.load_synthetic(0)
    scaler = VoxelScaler.fit(dataset.train.voxels)
    train_voxels, test_voxels = scaler.transform(dataset.train.voxels), scaler.transform(dataset.test.voxels)
    ridge = RidgeDecoder().fit(train_voxels, dataset.train.images)
    scores = metrics.reconstruction_metrics(dataset.test.images, ridge.predict(test_voxels))
    assert 0.75 <= scores["pcc"].mean() <= 0.83
    assert 0.85 <= scores["ident_2way"].mean() <= 0.97
    assert 1e2 < ridge.alpha_ < 1e4
    mean_image = MeanImageDecoder().fit(train_voxels, dataset.train.images).predict(test_voxels)
    assert 0.55 <= metrics.pcc(dataset.test.images, mean_image).mean() <= 0.72


@pytest.mark.parametrize("name", ["synthetic.mat", "synthetic69"])
def test_out_file_round_trips_through_load_dataset(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    assert synthetic.main(["--out", str(path), "--seed", "2"]) == 0
    assert capsys.readouterr().out == f"wrote {path}\n"
    assert [p.name for p in tmp_path.iterdir()] == [name]
    loaded = load_dataset(path)
    expected = synthetic.load_synthetic(2)
    for split in ("train", "test"):
        got, want = getattr(loaded, split), getattr(expected, split)
        np.testing.assert_array_equal(got.images, want.images)
        np.testing.assert_array_equal(got.voxels, want.voxels)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(loaded.extra_images, expected.extra_images)


@pytest.mark.parametrize("name", ["grid.png", "grid.img"])
def test_png_grid_is_written(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    assert synthetic.main(["--png", str(path)]) == 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (10 * 28 * 4, 12 * 28 * 4)


def test_command_line_without_an_output_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main([])
    assert exit_info.value.code == 2
    assert "nothing to do" in capsys.readouterr().err


def test_negative_seed_is_refused() -> None:
    with pytest.raises(ConfigError, match="non-negative"):
        synthetic.generate(-1)


def test_unwritable_output_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--out", str(tmp_path / "missing" / "x.mat")])
    assert exit_info.value.code == 2
    assert "cannot write" in capsys.readouterr().err
