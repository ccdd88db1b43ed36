"""Reference decoders every model is compared with, fitted on training trials (and image-only extras) only.

Voxels are expected already z-scored with training statistics (dataset.VoxelScaler); images are (N, H, W)
in [0, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from sklearn.linear_model import RidgeCV

# The one ridge grid of the project (baselines, the cognitive encoder's ridge start, the run's choices): four
# points a decade from 0.1 to 1e7. On the real '69' data cross-validation picks about 1e3, well inside it.
RIDGE_ALPHAS = np.logspace(-1, 7, 33)


class Decoder(Protocol):
    """What a baseline offers: fit on training trials, predict images from voxels."""

    name: str

    def fit(self, voxels: np.ndarray, images: np.ndarray, extra_images: np.ndarray | None = None) -> Decoder:
        """Learn from training voxels (N, V), images (N, H, W) and optional image-only extras (M, H, W)."""
        ...

    def fit_readout(self, voxels: np.ndarray, images: np.ndarray) -> Decoder:
        """Refit only what reads the voxels, keeping what `fit` learned from images alone (other voxels or trials)."""
        ...

    def predict(self, voxels: np.ndarray) -> np.ndarray:
        """Images (N, H, W) in [0, 1] for voxels (N, V)."""
        ...


def _check_fit_inputs(voxels: np.ndarray, images: np.ndarray) -> None:
    if voxels.ndim != 2:
        raise ValueError(f"voxels must be an (N, V) array, got shape {voxels.shape}")
    if images.ndim != 3:
        raise ValueError(f"images must be an (N, H, W) array, got shape {images.shape}")
    if voxels.shape[0] != images.shape[0]:
        raise ValueError(f"{voxels.shape[0]} voxel rows but {images.shape[0]} images")


class RidgeDecoder:
    """Linear map voxels -> pixels; one alpha for all pixels, chosen by leave-one-out CV on the training trials."""

    name = "ridge"

    def __init__(self, alphas: np.ndarray = RIDGE_ALPHAS) -> None:
        self.alphas = np.asarray(alphas, dtype=np.float64)

    def fit(
        self, voxels: np.ndarray, images: np.ndarray, extra_images: np.ndarray | None = None
    ) -> RidgeDecoder:
        """Fit on training trials (extra images have no voxels, so are unused); the penalty is kept in `alpha_`."""
        voxels = np.asarray(voxels, dtype=np.float64)
        images = np.asarray(images, dtype=np.float64)
        _check_fit_inputs(voxels, images)
        # RidgeCV's default efficient leave-one-out touches only the rows it is given.
        self._model = RidgeCV(alphas=self.alphas).fit(voxels, images.reshape(len(images), -1))
        self.alpha_ = float(self._model.alpha_)
        self._image_shape = images.shape[1:]
        return self

    def fit_readout(self, voxels: np.ndarray, images: np.ndarray) -> RidgeDecoder:
        """The whole decoder reads the voxels: `fit` again."""
        return self.fit(voxels, images)

    def predict(self, voxels: np.ndarray) -> np.ndarray:
        """Predicted images (N, H, W), clipped to [0, 1]."""
        flat = self._model.predict(np.asarray(voxels, dtype=np.float64))
        return np.clip(flat, 0.0, 1.0).reshape(-1, *self._image_shape)


class MeanImageDecoder:
    """Predicts the mean training image whatever the voxels: the floor any fMRI decoder must beat."""

    name = "mean-image"

    def fit(
        self, voxels: np.ndarray, images: np.ndarray, extra_images: np.ndarray | None = None
    ) -> MeanImageDecoder:
        """Store the mean of the training images (extra images unused: the floor is the trials' mean)."""
        images = np.asarray(images, dtype=np.float64)
        _check_fit_inputs(np.asarray(voxels), images)
        self.mean_image_ = np.clip(images.mean(axis=0), 0.0, 1.0)
        return self

    def fit_readout(self, voxels: np.ndarray, images: np.ndarray) -> MeanImageDecoder:
        """Nothing reads the voxels: the mean of these trials' images."""
        return self.fit(voxels, images)

    def predict(self, voxels: np.ndarray) -> np.ndarray:
        """The mean training image, once per row of voxels."""
        return np.repeat(self.mean_image_[None], np.asarray(voxels).shape[0], axis=0)


class _MlpVae(nn.Module):
    """Fully connected VAE on flattened images: Gaussian posterior, Bernoulli pixel likelihood."""

    hidden: tuple[int, ...]
    latent_dim: int
    n_pixels: int

    def setup(self) -> None:
        """The encoder's and decoder's dense layers, mirror images of each other."""
        self.encoder_layers = [nn.Dense(width) for width in self.hidden]
        self.posterior = nn.Dense(2 * self.latent_dim)
        self.decoder_layers = [nn.Dense(width) for width in reversed(self.hidden)]
        self.pixel_logits = nn.Dense(self.n_pixels)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Posterior mean and log-variance of flattened images in [0, 1]."""
        for layer in self.encoder_layers:
            x = nn.relu(layer(x))
        mean, log_var = jnp.split(self.posterior(x), 2, axis=-1)
        return mean, log_var

    def decode(self, z: jax.Array) -> jax.Array:
        """Pixel logits of latent codes."""
        for layer in self.decoder_layers:
            z = nn.relu(layer(z))
        return self.pixel_logits(z)

    def __call__(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Logits of a reparameterised sample, with the posterior mean and log-variance."""
        mean, log_var = self.encode(x)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        return self.decode(z), mean, log_var


@functools.lru_cache(maxsize=8)
def _vae_trainer(
    vae: _MlpVae, epochs: int, batch_size: int, learning_rate: float
) -> Callable[[jax.Array, jax.Array], dict]:
    """A jitted function (images (N, P), key) -> trained VAE parameters, cached so refits skip tracing."""
    tx = optax.adam(learning_rate)

    def loss_fn(params: dict, batch: jax.Array, key: jax.Array) -> jax.Array:
        logits, mean, log_var = vae.apply(params, batch, key)
        # Soft targets: grey anti-aliased pixels are valid Bernoulli means.
        nll = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, batch), axis=-1)
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
        return jnp.mean(nll + kl)

    def train(images: jax.Array, key: jax.Array) -> dict:
        init_key, epochs_key = jax.random.split(key)
        params = vae.init(init_key, images[:1], init_key)
        steps = images.shape[0] // batch_size

        def step(carry: tuple, batch_and_key: tuple) -> tuple[tuple, None]:
            params, opt_state = carry
            batch, key = batch_and_key
            grads = jax.grad(loss_fn)(params, batch, key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        def epoch(carry: tuple, key: jax.Array) -> tuple[tuple, None]:
            order_key, noise_key = jax.random.split(key)
            # A fresh permutation each epoch; the few images past the last whole batch wait for the next one.
            order = jax.random.permutation(order_key, images.shape[0])[: steps * batch_size]
            batches = images[order].reshape(steps, batch_size, -1)
            return jax.lax.scan(step, carry, (batches, jax.random.split(noise_key, steps)))[0], None

        (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)), jax.random.split(epochs_key, epochs))
        return params

    return jax.jit(train)


class LatentRidgeDecoder:
    """Ridge from voxels to the latent means of an MLP VAE trained on the images, decoded by the VAE.

    The VAE learns on the training images plus any image-only extras; ridge (one alpha, leave-one-out CV
    on the training trials) maps z-scored voxels to the posterior means of the training images. The
    defaults were chosen on validation trials carved from the synthetic sets' training splits: latent
    sizes 8-16 and 20-45 epochs tie within seed noise; fewer epochs cost SSIM, lr 3e-3 costs PCC.
    """

    name = "latent-ridge"

    def __init__(
        self,
        latent_dim: int = 16,
        epochs: int = 30,
        learning_rate: float = 1e-3,
        batch_size: int = 64,
        hidden: tuple[int, ...] = (512, 256),
        alphas: np.ndarray = RIDGE_ALPHAS,
        seed: int = 0,
    ) -> None:
        self.latent_dim = int(latent_dim)
        self.epochs = int(epochs)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.hidden = tuple(int(width) for width in hidden)
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self.seed = int(seed)

    def fit(
        self, voxels: np.ndarray, images: np.ndarray, extra_images: np.ndarray | None = None
    ) -> LatentRidgeDecoder:
        """Train the VAE on images and extras, then ridge voxels -> latent means; the penalty is kept in `alpha_`."""
        voxels = np.asarray(voxels, dtype=np.float64)
        images = np.asarray(images, dtype=np.float32)
        _check_fit_inputs(voxels, images)
        pool = images
        if extra_images is not None:
            extra_images = np.asarray(extra_images, dtype=np.float32)
            if extra_images.ndim != 3 or extra_images.shape[1:] != images.shape[1:]:
                raise ValueError(f"extra images must be (M, {images.shape[1]}, {images.shape[2]}), "
                                 f"got shape {extra_images.shape}")
            pool = np.concatenate([images, extra_images])
        self._image_shape = images.shape[1:]
        self._vae = _MlpVae(self.hidden, self.latent_dim, int(np.prod(self._image_shape)))
        # Without extras a small set may not fill one batch: then every step sees all of it.
        train = _vae_trainer(self._vae, self.epochs, min(self.batch_size, len(pool)), self.learning_rate)
        self._params = train(jnp.asarray(pool.reshape(len(pool), -1)), jax.random.key(self.seed))
        return self.fit_readout(voxels, images)

    def fit_readout(self, voxels: np.ndarray, images: np.ndarray) -> LatentRidgeDecoder:
        """Refit only the ridge map voxels -> latent means, keeping the trained VAE (other voxels, same images)."""
        voxels = np.asarray(voxels, dtype=np.float64)
        _check_fit_inputs(voxels, np.asarray(images))
        flat = jnp.asarray(np.asarray(images, dtype=np.float32).reshape(len(images), -1))
        means, _ = self._vae.apply(self._params, flat, method=_MlpVae.encode)
        self._ridge = RidgeCV(alphas=self.alphas).fit(voxels, np.asarray(means, dtype=np.float64))
        self.alpha_ = float(self._ridge.alpha_)
        return self

    def predict(self, voxels: np.ndarray) -> np.ndarray:
        """Decoded images (N, H, W) of the latent codes predicted from voxels, in [0, 1]."""
        codes = jnp.asarray(self._ridge.predict(np.asarray(voxels, dtype=np.float64)), dtype=jnp.float32)
        logits = self._vae.apply(self._params, codes, method=_MlpVae.decode)
        return np.asarray(jax.nn.sigmoid(logits), dtype=np.float64).reshape(-1, *self._image_shape)
