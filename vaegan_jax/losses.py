"""The losses of D-VAE/GAN as small pure functions (Larsen et al. 2016, method.md)."""

import jax
import jax.numpy as jnp
import optax


def kl_to_standard_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions, averaged over the batch."""
    per_example = -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar), axis=-1)
    return jnp.mean(per_example)


def feature_nll(features: jax.Array, target_features: jax.Array) -> jax.Array:
    """Gaussian NLL of the target's D-features under N(features, I), without its constant: 1/2 squared error.

    Summed over features, averaged over the batch; the target is a constant (no gradient flows into it).
    """
    diff = features - jax.lax.stop_gradient(target_features)
    return jnp.mean(0.5 * jnp.sum(diff.reshape(diff.shape[0], -1) ** 2, axis=-1))


def pixel_nll(images: jax.Array, target_images: jax.Array) -> jax.Array:
    """Gaussian NLL of the target's pixels under N(images, I), without its constant: 1/2 squared error.

    Summed over pixels, averaged over the batch; the target is a constant (no gradient flows into it).
    """
    diff = images - jax.lax.stop_gradient(target_images)
    return jnp.mean(0.5 * jnp.sum(diff.reshape(diff.shape[0], -1) ** 2, axis=-1))


def gan_bce(logits: jax.Array, target: float) -> jax.Array:
    """Binary cross-entropy of D's logits against a (possibly smoothed) constant label."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def latent_distance(mu: jax.Array, target_mu: jax.Array) -> jax.Array:
    """Squared distance between two posterior means, summed over dimensions, averaged over the batch."""
    return jnp.mean(jnp.sum((mu - jax.lax.stop_gradient(target_mu)) ** 2, axis=-1))


def reparameterize(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)."""
    return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
