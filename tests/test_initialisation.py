"""The cognitive encoder's linear start: the ridge map, the inverted encoding model and their mix (initialisation.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf

from vaegan_jax.initialisation import _encoding_model, encoding_readout, fit_latent_readout

DIMS, VOXELS = 4, 60


def trials(rng: np.random.Generator, n: int, loadings: np.ndarray, shared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(voxels, latents) of `n` trials: voxels linear in the latents, plus strong noise shared by every voxel."""
    latents = rng.normal(size=(n, DIMS))
    noise = rng.normal(size=(n, 2)) @ shared + 0.3 * rng.normal(size=(n, VOXELS))
    return 1.0 + latents @ loadings + noise, latents


@pytest.fixture(scope="module")
def planted() -> tuple:
    """80 training trials, 400 held-out ones and 2,000 latents from the prior, from one encoding model."""
    rng = np.random.default_rng(0)
    loadings, shared = 0.5 * rng.normal(size=(DIMS, VOXELS)), 2.0 * rng.normal(size=(2, VOXELS))
    train, held_out = trials(rng, 80, loadings, shared), trials(rng, 400, loadings, shared)
    return train, held_out, rng.normal(size=(2000, DIMS))


def test_the_encoding_readout_gives_the_posterior_mean_of_its_gaussian_model(planted: tuple) -> None:
    (voxels, latents), (held_voxels, _), prior = planted
    readout = encoding_readout(voxels, latents, prior)
    mean = held_voxels[:3] @ readout.coef + readout.intercept
    # The posterior mean is where the gradient of the log posterior vanishes, for the model the readout fitted:
    # refit that model here and check the gradient at the readout's answer, and that a step away does worse.
    weights, bias, residuals = _encoding_model(latents, voxels)
    noise_precision = np.linalg.inv(ledoit_wolf(residuals)[0])
    prior_precision = np.linalg.inv(ledoit_wolf(prior)[0])
    gradient = ((held_voxels[:3] - bias - mean @ weights) @ noise_precision @ weights.T
                - (mean - prior.mean(axis=0)) @ prior_precision)
    np.testing.assert_allclose(gradient, 0.0, atol=1e-6 * np.abs(mean @ prior_precision).max())
    assert readout.residual_variance.shape == (DIMS,) and np.all(readout.residual_variance > 0)


def test_voxels_that_carry_no_latent_leave_the_inverted_encoding_model_at_its_prior() -> None:
    rng = np.random.default_rng(1)
    latents, voxels, held_voxels = rng.normal(size=(80, DIMS)), rng.normal(size=(80, VOXELS)), rng.normal(size=(50, VOXELS))
    prior = 3.0 + 0.5 * rng.normal(size=(2000, DIMS))
    readout = encoding_readout(voxels, latents, prior)
    estimates = held_voxels @ readout.coef + readout.intercept
    # Chance fits of the voxels pull the estimates a little; the prior, four standard deviations of the trials'
    # latents away from them, holds them within about half of its own spread (the ridge map would give about 0).
    assert np.abs(estimates.mean(axis=0) - 3.0).max() < 0.25 and np.abs(estimates - 3.0).max() < 0.6
    assert np.all((0.2 < readout.residual_variance) & (readout.residual_variance < 0.25)), "about the prior's variance"


def test_the_mix_weighs_the_two_maps_and_keeps_the_ridge_variance(planted: tuple) -> None:
    (voxels, latents), (held_voxels, _), prior = planted
    ridge, inverted = fit_latent_readout(voxels, latents), encoding_readout(voxels, latents, prior)
    for mix in (0.0, 0.25, 1.0):
        mixed = fit_latent_readout(voxels, latents, prior, mix)
        expected = (1 - mix) * ridge.predict(held_voxels)[0] + mix * (held_voxels @ inverted.coef + inverted.intercept)
        np.testing.assert_allclose(mixed.predict(held_voxels)[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(mixed.residual_variance, ridge.residual_variance)
