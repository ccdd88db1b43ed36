"""Images between the stimulus resolution and the model's: resized as Pillow's bilinear filter resizes them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vaegan_jax.data.prepare import to_model_images, to_native_images


def pillow_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """A float image resized by Pillow: a triangle filter widened by the scale factor when shrinking."""
    return np.asarray(Image.fromarray(image.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("size", [64, 100])
def test_stimuli_are_enlarged_to_the_model_size_in_the_model_range(size: int) -> None:
    stimuli = np.random.default_rng(0).uniform(0.0, 1.0, (3, 28, 28)).astype(np.float32)
    model = np.asarray(to_model_images(stimuli, size))
    assert model.shape == (3, size, size, 1) and model.dtype == np.float32
    expected = np.stack([pillow_bilinear(image, size) for image in stimuli]) * 2.0 - 1.0
    np.testing.assert_allclose(model[..., 0], expected, atol=1e-5)


@pytest.mark.parametrize("size", [64, 100])
def test_generator_images_are_shrunk_to_the_stimulus_size_with_antialiasing(size: int) -> None:
    # A fine checkerboard: sampling without antialiasing would alias it, the widened filter greys it out.
    rng = np.random.default_rng(1)
    generated = rng.uniform(-1.0, 1.0, (2, size, size, 1)).astype(np.float32)
    generated[1, ..., 0] = np.where(np.add.outer(np.arange(size), np.arange(size)) % 2 == 0, 1.0, -1.0)
    native = to_native_images(generated, 28)
    assert native.shape == (2, 28, 28) and native.dtype == np.float32
    expected = np.stack([pillow_bilinear((image[..., 0] + 1.0) / 2.0, 28) for image in generated])
    np.testing.assert_allclose(native, expected, atol=1e-5)
    assert np.abs(native[1] - 0.5).max() < 0.1


def test_at_the_native_size_only_the_range_changes_and_out_of_range_values_are_clipped() -> None:
    stimuli = np.random.default_rng(2).uniform(0.0, 1.0, (2, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(to_model_images(stimuli, 28))[..., 0], stimuli * 2.0 - 1.0, atol=1e-7)
    np.testing.assert_allclose(to_native_images(to_model_images(stimuli, 28), 28), stimuli, atol=1e-7)
    beyond = np.array([[[-3.0, 0.0], [0.5, 4.0]]], np.float32)
    np.testing.assert_array_equal(to_native_images(beyond[..., None], 2), [[[0.0, 0.5], [0.75, 1.0]]])
