"""The loss terms against closed forms and hand-computed values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from vaegan_jax import losses


def test_kl_is_zero_at_the_prior() -> None:
    assert float(losses.kl_to_standard_normal(jnp.zeros((3, 8)), jnp.zeros((3, 8)))) == 0.0


def test_kl_of_a_hand_computed_case() -> None:
    # Example 1: mu (1, 2), variance (1, 2): 1/2 * [(1 + 1 - 1 - 0) + (2 + 4 - 1 - ln 2)] = 3 - ln(2) / 2.
    # Example 2: mu (0, 0), variance (e, 1): 1/2 * (e - 1 - 1) = e / 2 - 1.
    mu = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    logvar = jnp.array([[0.0, math.log(2.0)], [1.0, 0.0]])
    expected = ((3 - math.log(2) / 2) + (math.e / 2 - 1)) / 2
    assert float(losses.kl_to_standard_normal(mu, logvar)) == pytest.approx(expected, rel=1e-6)


def test_kl_matches_the_univariate_closed_form_summed_over_dimensions() -> None:
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(4, 6))
    logvar = rng.normal(size=(4, 6))
    sigma = np.exp(logvar / 2)
    # KL(N(m, s^2) || N(0, 1)) = ln(1 / s) + (s^2 + m^2) / 2 - 1/2, per dimension.
    per_example = np.sum(-np.log(sigma) + (sigma**2 + mu**2) / 2 - 0.5, axis=1)
    value = losses.kl_to_standard_normal(jnp.asarray(mu, jnp.float32), jnp.asarray(logvar, jnp.float32))
    assert float(value) == pytest.approx(per_example.mean(), rel=1e-5)


def test_kl_gradient_vanishes_at_the_prior_and_pulls_toward_it() -> None:
    grad_mu, grad_logvar = jax.grad(losses.kl_to_standard_normal, argnums=(0, 1))(jnp.zeros((1, 2)), jnp.zeros((1, 2)))
    assert np.all(np.asarray(grad_mu) == 0) and np.all(np.asarray(grad_logvar) == 0)
    grad_mu, _ = jax.grad(losses.kl_to_standard_normal, argnums=(0, 1))(jnp.array([[2.0, -3.0]]), jnp.zeros((1, 2)))
    np.testing.assert_allclose(grad_mu, [[2.0, -3.0]])


def test_feature_nll_is_half_the_squared_error_summed_per_example_and_averaged() -> None:
    features = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    target = jnp.array([[0.0, 0.0], [0.0, 3.0]])
    # Example 1: (1 + 4) / 2 = 2.5; example 2: 9 / 2 = 4.5.
    assert float(losses.feature_nll(features, target)) == pytest.approx(3.5)


def test_feature_nll_flattens_feature_maps_and_sends_no_gradient_to_the_target() -> None:
    rng = np.random.default_rng(1)
    features = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
    flat = losses.feature_nll(features.reshape(2, -1), target.reshape(2, -1))
    assert float(losses.feature_nll(features, target)) == pytest.approx(float(flat))
    grad_features, grad_target = jax.grad(losses.feature_nll, argnums=(0, 1))(features, target)
    np.testing.assert_allclose(grad_features, (features - target) / 2, rtol=1e-6)
    assert np.all(np.asarray(grad_target) == 0)


def test_gan_bce_of_known_logits() -> None:
    # A zero logit is p = 1/2 whatever the label: ln 2.
    assert float(losses.gan_bce(jnp.zeros(4), 0.75)) == pytest.approx(math.log(2))
    # Logit ln 3 is p = 3/4; against the smoothed real label 0.75 the loss is the label's own entropy.
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(losses.gan_bce(jnp.full(3, math.log(3.0)), 0.75)) == pytest.approx(entropy, rel=1e-6)
    # Averaged over the batch: labels 1 and 0 for p = 3/4.
    mixed = (losses.gan_bce(jnp.array([math.log(3.0)]), 1.0) + losses.gan_bce(jnp.array([math.log(3.0)]), 0.0)) / 2
    assert float(mixed) == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, rel=1e-6)


def test_gan_bce_stays_finite_for_confident_logits() -> None:
    value = losses.gan_bce(jnp.array([100.0, -100.0]), 0.0)
    assert float(value) == pytest.approx(50.0, rel=1e-4)


def test_latent_distance_and_its_stopped_target() -> None:
    mu = jnp.array([[1.0, 1.0], [0.0, 2.0]])
    target = jnp.array([[0.0, 0.0], [0.0, 0.0]])
    assert float(losses.latent_distance(mu, target)) == pytest.approx((2.0 + 4.0) / 2)
    assert np.all(np.asarray(jax.grad(losses.latent_distance, argnums=1)(mu, target)) == 0)


def test_reparameterize_draws_from_the_posterior() -> None:
    key = jax.random.key(0)
    mu = jnp.array([[1.0, -2.0]])
    logvar = jnp.array([[0.0, math.log(4.0)]])
    z = losses.reparameterize(key, mu, logvar)
    eps = jax.random.normal(key, mu.shape)
    np.testing.assert_allclose(z, mu + jnp.array([[1.0, 2.0]]) * eps, rtol=1e-6)
    many = losses.reparameterize(key, jnp.broadcast_to(mu, (20000, 2)), jnp.broadcast_to(logvar, (20000, 2)))
    np.testing.assert_allclose(many.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(many.var(axis=0), [1.0, 4.0], rtol=0.05)


def test_pixel_nll_is_half_the_squared_error_per_image_averaged_over_the_batch() -> None:
    # Image 1 differs by 1 in two pixels (1/2 * 2 = 1), image 2 by 2 in one pixel (1/2 * 4 = 2): mean 1.5.
    images = jnp.zeros((2, 2, 2, 1))
    target = jnp.zeros((2, 2, 2, 1)).at[0, 0, :, 0].set(1.0).at[1, 1, 1, 0].set(-2.0)
    assert float(losses.pixel_nll(images, target)) == pytest.approx(1.5)
    # Against scipy's Gaussian log-density, less its constant: -sum log N(target; image, 1) - const.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4, 4, 1)), rng.normal(size=(3, 4, 4, 1))
    nll = -(norm.logpdf(b, loc=a).reshape(3, -1).sum(axis=1) + 16 * 0.5 * math.log(2 * math.pi)).mean()
    assert float(losses.pixel_nll(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))) == pytest.approx(nll, rel=1e-5)
    # No gradient reaches the target.
    assert float(jnp.abs(jax.grad(lambda t: losses.pixel_nll(images, t))(target)).sum()) == 0.0
