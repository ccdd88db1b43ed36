"""Stage I's elastic distortion (`train.elastic_augment`): scipy's smoothing and resampling, drawn afresh inside
the jitted step, for stage I's images only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from conftest import leaves
from vaegan_jax import augmentation
from vaegan_jax import config as config_lib
from vaegan_jax.config import Config
from vaegan_jax.data.dataset import Dataset
from vaegan_jax.data.prepare import prepare, to_model_images
from vaegan_jax.errors import ConfigError
from vaegan_jax.rng import member_keys
from vaegan_jax.steps import STAGES, EpochRunner, create_members


@pytest.mark.parametrize("side", [28, 56])
def test_displacement_fields_are_scipys_gaussian_filter_of_the_same_noise(side: int) -> None:
    key = jax.random.key(0)
    fields = np.asarray(augmentation.displacement_fields(key, 3, side, side))
    noise = np.asarray(jax.random.uniform(key, (3, 2, side, side), minval=-1.0, maxval=1.0))
    scale = side / 28
    expected = np.stack([[scipy.ndimage.gaussian_filter(noise[i, axis], 4.0 * scale) * 20.0 * scale**2
                          for axis in range(2)] for i in range(3)])
    np.testing.assert_allclose(fields, expected, atol=1e-5 * scale**2)
    # Displacements of a few pixels at 28x28, as many more as the image is larger: digits bend, they do not
    # break up.
    assert 0.5 * scale < fields.std() < 3.0 * scale


def test_warp_is_scipys_bilinear_resampling_with_nearest_edges() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (28, 28)).astype(np.float32)
    displacement = np.asarray(augmentation.displacement_fields(jax.random.key(1), 1, 28, 28))[0]
    rows, cols = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    expected = scipy.ndimage.map_coordinates(image, [rows + displacement[0], cols + displacement[1]], order=1,
                                             mode="nearest")
    np.testing.assert_allclose(augmentation.warp(jnp.asarray(image), jnp.asarray(displacement)), expected, atol=1e-5)


def test_each_image_is_distorted_at_the_given_probability() -> None:
    images = jax.random.uniform(jax.random.key(2), (200, 28, 28, 1), minval=-1.0, maxval=1.0)
    for probability, low, high in [(0.0, 0, 0), (0.3, 40, 80), (1.0, 200, 200)]:
        distorted = augmentation.elastic_distort(jax.random.key(3), images, probability)
        assert distorted.shape == images.shape and distorted.dtype == images.dtype
        changed = np.any(np.asarray(distorted) != np.asarray(images), axis=(1, 2, 3)).sum()
        assert low <= changed <= high, (probability, changed)
    # Resampling never leaves the images' range.
    assert float(distorted.min()) >= -1.0 and float(distorted.max()) <= 1.0


@pytest.mark.parametrize("probability", ["-0.1", "1.5"])
def test_a_probability_outside_zero_to_one_is_refused(tiny_config: Config, probability: str) -> None:
    with pytest.raises(ConfigError, match="elastic_augment"):
        config_lib.override(tiny_config, [f"train.elastic_augment={probability}"])


@pytest.mark.slow
def test_only_stage_one_sees_distorted_images(tiny_config: Config, dataset: Dataset) -> None:
    base = config_lib.override(tiny_config, [f"model.image_size={dataset.image_size}", "train.elastic_augment=0"])
    augmented = config_lib.override(base, ["train.elastic_augment=1"])
    data = prepare(dataset, base.train.val_trials, base.train.split_seed)
    arrays = {"image": to_model_images(data.fit.images, dataset.image_size), "voxels": jnp.asarray(data.fit.voxels)}
    # Stage III builds its batches as stage II does: both read the paired trials.
    for stage in STAGES[:2]:
        after = [
            EpochRunner(config, stage, len(data.fit))(
                create_members(config, dataset.n_voxels, member_keys(config)), arrays,
                jax.random.split(jax.random.key(stage.number), 1),
            )[0]
            for config in (base, augmented)
        ]
        same = all(np.array_equal(a, b) for a, b in zip(leaves(after[0]), leaves(after[1])))
        assert same == stage.paired, stage.name
