"""The four D-VAE/GAN networks as pure-functional Flax (Linen) modules.

Geometry follows method.md: 5x5 stride-2 SAME convolutions, BatchNorm (momentum 0.9, eps 1e-5), weights
initialised from N(0, 0.02). Images are NHWC in [-1, 1]; the generator ends in tanh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vaegan_jax.config import ModelConfig
from vaegan_jax.cpu_convolution import conv_general_dilated

NETWORKS = ("visual_encoder", "cognitive_encoder", "generator", "discriminator")
CHANNELS = 1  # the stimuli are grey-scale: every loader keeps one channel

_init = nn.initializers.normal(stddev=0.02)


def _batch_norm(train: bool, dtype: jnp.dtype) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)


def _activation(x: jax.Array, negative_slope: float) -> jax.Array:
    return nn.leaky_relu(x, negative_slope) if negative_slope > 0 else nn.relu(x)


def _conv_layer(features: int, stride: int, dtype: jnp.dtype) -> nn.Conv:
    """A 5x5 SAME convolution with the paper's initialisation."""
    return nn.Conv(features, (5, 5), (stride, stride), "SAME", kernel_init=_init, dtype=dtype,
                   conv_general_dilated=conv_general_dilated)


def _gaussian_head(h: jax.Array, latent_dim: int) -> tuple[jax.Array, jax.Array]:
    """The (mu, logvar) layers both encoders end in, in float32 whatever the compute type."""
    mu = nn.Dense(latent_dim, kernel_init=_init, name="mu")(h)
    logvar = nn.Dense(latent_dim, kernel_init=_init, name="logvar")(h)
    return mu.astype(jnp.float32), logvar.astype(jnp.float32)


def spatial_sizes(image_size: int, n_halvings: int) -> list[int]:
    """Feature-map sizes after each stride-2 SAME layer: [image_size, ceil(/2), ...]."""
    sizes = [image_size]
    for _ in range(n_halvings):
        sizes.append(-(-sizes[-1] // 2))
    return sizes


def crop_to_odd_size(upsampled: jax.Array, size: int) -> jax.Array:
    """A stride-2 SAME transposed convolution's output (2n wide) cut to `size` (2n or 2n - 1; 13 -> 25 in the
    paper's net) by dropping its first row and column: what TensorFlow's conv2d_transpose to 2n - 1, the
    official code's, computes (the gradient of a SAME convolution of a (2n - 1)-wide image, padded alike on
    both sides), so neither edge is favoured."""
    return upsampled[:, upsampled.shape[1] - size:, upsampled.shape[2] - size:, :]


def _subpixel_taps(kernel_size: int) -> tuple[np.ndarray, int, int]:
    """Kernel-tap table of a stride-2 SAME transposed convolution split into its two output phases.

    Returns (taps, low, high): taps[phase, offset] is the kernel index that output phase `phase` applies
    to input offset `offset + low` (kernel_size when no tap), and the stride-1 padding (low, high).
    Derived from lax.conv_transpose's SAME padding: pad_a = ceil((k + s - 2) / 2) for k - 1 >= s.
    """
    pad_a = kernel_size - 1 if kernel_size - 1 < 2 else -(-kernel_size // 2)
    offsets = {(phase, (phase + t - pad_a) // 2): t
               for phase in (0, 1) for t in range(kernel_size) if (phase + t - pad_a) % 2 == 0}
    low = min(d for _, d in offsets)
    high = max(d for _, d in offsets)
    taps = np.full((2, high - low + 1), kernel_size, dtype=np.int32)
    for (phase, d), t in offsets.items():
        taps[phase, d - low] = t
    return taps, -low, high


class SubpixelConvTranspose(nn.Module):
    """Exact equivalent of `nn.ConvTranspose(features, (k, k), strides=(2, 2), padding="SAME")`.

    XLA's CPU backend lowers a transposed convolution to an input-dilated convolution in which 3/4 of
    the multiplies hit inserted zeros; the same function as one stride-1 convolution producing the four
    output phases, then depth-to-space, is several times faster. The parameters have nn.ConvTranspose's
    names and shapes, so either module can run the other's weights.
    """

    features: int
    kernel_size: int = 5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", _init, (k, k, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        taps, low, high = _subpixel_taps(k)
        padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
        # phase_kernel[a, b, cin, ry, rx, cout] = kernel[taps[ry, a], taps[rx, b]]
        phase_kernel = padded[taps.T][:, :, taps.T].transpose(0, 2, 4, 1, 3, 5)
        span = taps.shape[1]
        phase_kernel = phase_kernel.reshape(span, span, x.shape[-1], 4 * self.features)
        y = conv_general_dilated(x.astype(self.dtype), phase_kernel.astype(self.dtype), (1, 1), ((low, high), (low, high)))
        n, h, w, _ = y.shape
        y = y.reshape(n, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class VisualEncoder(nn.Module):
    """E_vis: image -> (mu, logvar) of q(z | image)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, image: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        cfg, dtype = self.config, jnp.dtype(self.config.compute_dtype)
        h = image.astype(dtype)
        for features in cfg.encoder_features:
            h = _conv_layer(features, 2, dtype)(h)
            h = _activation(_batch_norm(train, dtype)(h), cfg.negative_slope)
        h = h.reshape(h.shape[0], -1)
        h = nn.Dense(cfg.encoder_dense, kernel_init=_init, dtype=dtype)(h)
        h = _activation(_batch_norm(train, dtype)(h), cfg.negative_slope)
        return _gaussian_head(h, cfg.latent_dim)


class CognitiveEncoder(nn.Module):
    """E_cog: z-scored voxels -> (mu, logvar); a hidden layer of `cognitive_hidden` units, or linear when 0."""

    config: ModelConfig

    @nn.compact
    def __call__(self, voxels: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        cfg, dtype = self.config, jnp.dtype(self.config.compute_dtype)
        h = nn.Dropout(cfg.voxel_dropout, deterministic=not train)(voxels).astype(dtype)
        if cfg.cognitive_hidden > 0:
            h = nn.Dense(cfg.cognitive_hidden, kernel_init=_init, dtype=dtype)(h)
            h = _activation(_batch_norm(train, dtype)(h), cfg.negative_slope)
        return _gaussian_head(h, cfg.latent_dim)


class Generator(nn.Module):
    """G: latent z -> image in [-1, 1] of `image_size` (upsampling mirrors the encoder's halvings)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, z: jax.Array, train: bool) -> jax.Array:
        cfg, dtype = self.config, jnp.dtype(self.config.compute_dtype)
        sizes = spatial_sizes(cfg.image_size, len(cfg.generator_features))[::-1]
        h = nn.Dense(sizes[0] * sizes[0] * cfg.generator_base, kernel_init=_init, dtype=dtype)(z.astype(dtype))
        h = nn.relu(_batch_norm(train, dtype)(h))
        h = h.reshape(z.shape[0], sizes[0], sizes[0], cfg.generator_base)
        for features, size in zip(cfg.generator_features, sizes[1:]):
            h = crop_to_odd_size(SubpixelConvTranspose(features, cfg.generator_kernel, dtype=dtype)(h), size)
            h = nn.relu(_batch_norm(train, dtype)(h))
        h = _conv_layer(CHANNELS, 1, dtype)(h)
        return jnp.tanh(h).astype(jnp.float32)


class Discriminator(nn.Module):
    """D: image -> (logit that the image is real, Dis_l features: the last conv's output before its BN)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, image: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        cfg, dtype = self.config, jnp.dtype(self.config.compute_dtype)
        h = image.astype(dtype)
        last = len(cfg.discriminator_features) - 1
        features = h
        for i, (width, stride) in enumerate(zip(cfg.discriminator_features, cfg.discriminator_strides)):
            h = _conv_layer(width, stride, dtype)(h)
            if i == last:
                features = h
            if i > 0:
                h = _batch_norm(train, dtype)(h)
            h = _activation(h, cfg.negative_slope)
        h = h.reshape(h.shape[0], -1)
        h = nn.Dense(cfg.discriminator_dense, kernel_init=_init, dtype=dtype)(h)
        h = _activation(_batch_norm(train, dtype)(h), cfg.negative_slope)
        logit = nn.Dense(1, kernel_init=_init, name="logit")(h)
        return logit[:, 0].astype(jnp.float32), features.reshape(h.shape[0], -1).astype(jnp.float32)


def build_networks(config: ModelConfig) -> dict[str, nn.Module]:
    """The four networks of a configuration, keyed by NETWORKS."""
    return {
        "visual_encoder": VisualEncoder(config),
        "cognitive_encoder": CognitiveEncoder(config),
        "generator": Generator(config),
        "discriminator": Discriminator(config),
    }


def example_inputs(config: ModelConfig, n_voxels: int, batch: int = 2) -> dict[str, jax.Array]:
    """Dummy inputs that fix each network's parameter shapes at initialisation."""
    image = jnp.zeros((batch, config.image_size, config.image_size, CHANNELS), jnp.float32)
    return {
        "visual_encoder": image,
        "cognitive_encoder": jnp.zeros((batch, n_voxels), jnp.float32),
        "generator": jnp.zeros((batch, config.latent_dim), jnp.float32),
        "discriminator": image,
    }
