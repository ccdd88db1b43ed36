"""From a Dataset to model-ready arrays: the fit/validation split, voxel z-scoring and selection, image resizing."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vaegan_jax.data import handwriting
from vaegan_jax.data.dataset import Dataset, Trials, VoxelScaler, carve_validation
from vaegan_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The splits a run uses, voxels z-scored with statistics of the fit trials only.

    fit: trials the networks learn from; val: trials carved from the training split for model selection;
    test: the standard test split, used only for the final report. Every split keeps all its voxels (the
    baselines read them all); `voxel_selection` names those the cognitive encoder reads. extra_images:
    image-only images for stage I, described by `extra_source`.
    """

    fit: Trials
    val: Trials
    test: Trials
    extra_images: np.ndarray | None
    scaler: VoxelScaler
    voxel_selection: np.ndarray
    extra_source: str = "none"

    def model_voxels(self, trials: Trials) -> np.ndarray:
        """The z-scored voxels of `trials` that the cognitive encoder reads."""
        return trials.voxels[:, self.voxel_selection]


def selection_size(n_voxels: int, n: int) -> int:
    """How many voxels a selection of n keeps out of n_voxels: all when n is 0, -1 (not chosen yet) or at least n_voxels."""
    return n_voxels if n <= 0 else min(n, n_voxels)


def select_voxels(voxels: np.ndarray, images: np.ndarray, n: int) -> np.ndarray:
    """Ascending indices of the voxels most correlated (in absolute value) with some pixel, `selection_size` of them.

    With 80-odd trials and thousands of voxels, most of them outside the stimulus' retinotopic footprint
    or drowned in noise, every decoder's ridge spends its penalty on them; a selection made on the fit
    trials alone keeps validation and test honest.
    """
    n_voxels = voxels.shape[1]
    n = selection_size(n_voxels, n)
    if n == n_voxels:
        return np.arange(n_voxels)
    pixels = images.reshape(len(images), -1).astype(np.float64)

    def standardized(x: np.ndarray) -> np.ndarray:
        centred = x - x.mean(axis=0)
        std = centred.std(axis=0)
        # Constant voxels and pixels (a blank border) correlate with nothing.
        return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)

    correlation = standardized(voxels.astype(np.float64)).T @ standardized(pixels) / len(voxels)
    strongest = np.abs(correlation).max(axis=1)
    return np.sort(np.argsort(-strongest, kind="stable")[:n])


def image_only_extras(dataset: Dataset, shipped_prior: bool) -> tuple[np.ndarray | None, str]:
    """Stage I's image-only images and where they come from: the data set's own less every copy of one of its
    stimuli, else (if allowed and the images are 28x28) the shipped MNIST sixes and nines less every exact or
    near-exact copy of one."""
    # The test stimuli are read here for one purpose only: no copy of them may reach training.
    stimuli = np.concatenate([dataset.train.images, dataset.test.images])
    own, all_copies = dataset.extra_images, ""
    if own is not None:
        copies = handwriting.near_duplicates(own, stimuli, handwriting.COPY_PCC)
        if not copies.all():
            return own[~copies], f"the data set's own {len(own)} ({int(copies.sum())} removed as copies of its stimuli)"
        all_copies = f"the data set's own {len(own)} were all copies of its stimuli and were removed; "
    if not shipped_prior or dataset.image_size != handwriting.SIDE:
        return None, all_copies + "none"
    prior = handwriting.prior_without_stimuli(stimuli)
    return prior.images, all_copies + prior.describe()


def prepare(
    dataset: Dataset, val_trials: int, seed: int, selected_voxels: int = 0, shipped_prior: bool = False,
    trained_inputs: tuple[VoxelScaler, np.ndarray] | None = None,
) -> PreparedData:
    """Carve the validation split, z-score every split's voxels and select voxels, with the fit trials' statistics.

    With `shipped_prior`, a data set without image-only extras gets the shipped handwriting (`image_only_extras`).
    `trained_inputs`, a trained run's (scaler, voxel selection), replaces both: its cognitive encoder reads
    those voxels, so data other than its own must reach it as they did in training.
    """
    try:
        fit, val = carve_validation(dataset.train, val_trials, seed)
    except DataError as err:
        raise DataError(f"{dataset.source}: {err}") from None
    scaler = VoxelScaler.fit(fit.voxels) if trained_inputs is None else trained_inputs[0]
    fit = fit.with_voxels(scaler.transform(fit.voxels))
    extras, source = image_only_extras(dataset, shipped_prior)
    return PreparedData(
        fit=fit,
        val=val.with_voxels(scaler.transform(val.voxels)),
        test=dataset.test.with_voxels(scaler.transform(dataset.test.voxels)),
        extra_images=extras,
        scaler=scaler,
        voxel_selection=(select_voxels(fit.voxels, fit.images, selected_voxels) if trained_inputs is None
                         else np.asarray(trained_inputs[1], np.int64)),
        extra_source=source,
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


def clear_faint_pixels(images: np.ndarray, black_level: float) -> np.ndarray:
    """Images in [0, 1] with every pixel fainter than `black_level` set to black (0: unchanged)."""
    return np.where(images < black_level, np.zeros((), images.dtype), images) if black_level > 0 else images
