"""Elastic distortion of stage I's images inside the jitted step (Simard et al. 2003), a fresh draw every step.

`data.handwriting.elastic_variants` makes the same distortions once, in numpy, to top up a short prior; here
they are drawn anew for every batch, so no distorted copy ever repeats. The smoothing of the random
displacement field is a fixed linear map on each image axis (scipy's Gaussian filter with its default
"reflect" edges), applied as two small matrix products.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

# The alpha and sigma of `elastic_variants`, in pixels of a 28x28 image; other sizes scale both, for the same
# distortion.
from vaegan_jax.data.handwriting import ELASTIC_ALPHA as ALPHA
from vaegan_jax.data.handwriting import ELASTIC_SIGMA as SIGMA
from vaegan_jax.data.handwriting import SIDE


@functools.lru_cache(maxsize=8)
def gaussian_smoothing_matrix(size: int, sigma: float = SIGMA) -> np.ndarray:
    """The (size, size) matrix M with M @ v == scipy.ndimage.gaussian_filter1d(v, sigma) for every vector v."""
    return scipy.ndimage.gaussian_filter1d(np.eye(size), sigma, axis=0).astype(np.float32)


def displacement_fields(key: jax.Array, n: int, height: int, width: int) -> jax.Array:
    """(n, 2, height, width) smoothed random displacements in pixels: uniform noise in [-1, 1], Gaussian-smoothed
    along both image axes, times alpha; at another size than 28x28 the same field, scaled to it."""
    scale = height / SIDE
    noise = jax.random.uniform(key, (n, 2, height, width), minval=-1.0, maxval=1.0)
    rows, cols = gaussian_smoothing_matrix(height, SIGMA * scale), gaussian_smoothing_matrix(width, SIGMA * scale)
    # Smoothing white noise over `scale` times more pixels per side divides its amplitude by `scale`: alpha
    # makes that up, and then scales the displacements with the image.
    return ALPHA * scale**2 * jnp.einsum("ij,ncjk,lk->ncil", rows, noise, cols)


def warp(image: jax.Array, displacement: jax.Array) -> jax.Array:
    """One (H, W) image resampled bilinearly at its pixel grid plus `displacement` (2, H, W); outside the
    image it takes the nearest edge pixel (the background, for centred digits)."""
    height, width = image.shape
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=image.dtype), jnp.arange(width, dtype=image.dtype), indexing="ij")
    return jax.scipy.ndimage.map_coordinates(image, [rows + displacement[0], cols + displacement[1]], order=1,
                                             mode="nearest")


def elastic_distort(key: jax.Array, images: jax.Array, probability: float) -> jax.Array:
    """A batch of (N, H, W, C) images with each, at `probability`, distorted by its own smoothed random
    displacement field (one field for all its channels)."""
    n, height, width, _ = images.shape
    key_field, key_pick = jax.random.split(key)
    fields = displacement_fields(key_field, n, height, width).astype(images.dtype)
    picked = jax.random.bernoulli(key_pick, probability, (n,))
    fields = jnp.where(picked[:, None, None, None], fields, 0.0)
    channels_first = jnp.moveaxis(images, -1, 1)
    warped = jax.vmap(jax.vmap(warp, in_axes=(0, None)))(channels_first, fields)
    return jnp.moveaxis(warped, 1, -1)
