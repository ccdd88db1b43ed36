"""From a Dataset to model-ready arrays: the fit/validation split, voxel z-scoring, image resizing."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vaegan_jax.data.dataset import Dataset, Trials, VoxelScaler, carve_validation


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The splits a run uses, voxels z-scored with statistics of the fit trials only.

    fit: trials the networks learn from; val: trials carved from the training split for model selection;
    test: the standard test split, used only for the final report.
    """

    fit: Trials
    val: Trials
    test: Trials
    extra_images: np.ndarray | None
    scaler: VoxelScaler


def prepare(dataset: Dataset, val_trials: int, seed: int) -> PreparedData:
    """Carve the validation split and z-score every split's voxels with the fit trials' statistics."""
    fit, val = carve_validation(dataset.train, val_trials, seed)
    scaler = VoxelScaler.fit(fit.voxels)
    return PreparedData(
        fit=fit.with_voxels(scaler.transform(fit.voxels)),
        val=val.with_voxels(scaler.transform(val.voxels)),
        test=dataset.test.with_voxels(scaler.transform(dataset.test.voxels)),
        extra_images=dataset.extra_images,
        scaler=scaler,
    )


def to_model_images(images: np.ndarray, size: int) -> jax.Array:
    """(N, H, W) images in [0, 1] -> (N, size, size, 1) in [-1, 1], resized with antialiasing."""
    x = jnp.asarray(images, jnp.float32)[..., None]
    if x.shape[1] != size:
        x = jax.image.resize(x, (x.shape[0], size, size, 1), "linear", antialias=True)
    return jnp.clip(x, 0.0, 1.0) * 2.0 - 1.0


def to_native_images(model_images: jax.Array, size: int) -> np.ndarray:
    """(N, S, S, 1) generator output in [-1, 1] -> (N, size, size) in [0, 1] at the stimulus resolution."""
    x = jnp.asarray(model_images, jnp.float32)
    if x.shape[1] != size:
        x = jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), "linear", antialias=True)
    return np.asarray(jnp.clip((x[..., 0] + 1.0) / 2.0, 0.0, 1.0))
