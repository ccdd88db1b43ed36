"""The one data-set type every loader returns, and the splits and voxel scaling built on it."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from vaegan_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Trials:
    """Paired stimuli and fMRI responses of some trials.

    images: (N, H, W) float32 in [0, 1], upright. voxels: (N, V) float32.
    labels: (N,) int64 class labels, or None when unknown. indices: (N,) the trials' positions in the
    source file, so a split can be named and checked.
    """

    images: np.ndarray
    voxels: np.ndarray
    labels: np.ndarray | None
    indices: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, positions: np.ndarray) -> Trials:
        """The trials at the given positions (positions in this object, not trial indices)."""
        return Trials(
            images=self.images[positions],
            voxels=self.voxels[positions],
            labels=None if self.labels is None else self.labels[positions],
            indices=self.indices[positions],
        )

    def with_voxels(self, voxels: np.ndarray) -> Trials:
        """The same trials with other voxel values (e.g. z-scored)."""
        return dataclasses.replace(self, voxels=voxels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A stimulus/fMRI data set with its standard train/test split.

    extra_images: (M, H, W) float32 image-only data for stage I (the Donders file's `prior`), or None.
    fingerprint: a hash of the source (file bytes, or generator parameters) and the split.
    """

    name: str
    source: str
    train: Trials
    test: Trials
    extra_images: np.ndarray | None
    fingerprint: str

    @property
    def image_size(self) -> int:
        """Side length of the (square) stimuli."""
        return int(self.train.images.shape[1])

    @property
    def n_voxels(self) -> int:
        """Number of voxels per trial."""
        return int(self.train.voxels.shape[1])

    def summary(self) -> str:
        """One line describing the data set."""
        extra = 0 if self.extra_images is None else len(self.extra_images)
        return (
            f"{self.name} ({self.source}): {len(self.train)} train / {len(self.test)} test trials, "
            f"{self.image_size}x{self.image_size} images, {self.n_voxels} voxels, {extra} image-only extras"
        )


# The evaluation's Gaussian SSIM (metrics.py) slides an 11x11 window over every image.
SMALLEST_IMAGE_SIDE = 11


def validate_trials(trials: Trials, split: str, source: str) -> None:
    """Raise DataError naming `source` when a split is empty, mismatched or holds non-finite values."""
    if len(trials) == 0 or trials.voxels.shape[0] == 0:
        raise DataError(f"{source}: the {split} split is empty")
    if trials.images.ndim != 3 or trials.images.shape[1] != trials.images.shape[2]:
        raise DataError(f"{source}: {split} images must be square, got shape {trials.images.shape[1:]}")
    if trials.images.shape[1] < SMALLEST_IMAGE_SIDE:
        raise DataError(f"{source}: {split} images are {trials.images.shape[1]}x{trials.images.shape[2]}; the "
                        f"measures need at least {SMALLEST_IMAGE_SIDE}x{SMALLEST_IMAGE_SIDE}")
    if trials.voxels.ndim != 2:
        raise DataError(f"{source}: {split} voxels must be a 2-D (trials, voxels) array, got {trials.voxels.shape}")
    if trials.images.shape[0] != trials.voxels.shape[0]:
        raise DataError(
            f"{source}: {split} has {trials.images.shape[0]} images but {trials.voxels.shape[0]} voxel rows"
        )
    if trials.labels is not None and trials.labels.shape[0] != trials.images.shape[0]:
        raise DataError(f"{source}: {split} has {trials.images.shape[0]} images but {trials.labels.shape[0]} labels")
    if not np.all(np.isfinite(trials.voxels)):
        raise DataError(f"{source}: {split} voxels contain NaN or infinite values")
    if not np.all(np.isfinite(trials.images)):
        raise DataError(f"{source}: {split} images contain NaN or infinite values")


def make_dataset(
    name: str,
    source: str,
    train: Trials,
    test: Trials,
    extra_images: np.ndarray | None,
    content_hash: str,
) -> Dataset:
    """Validate the splits and build a Dataset whose fingerprint covers the content and the split."""
    validate_trials(train, "train", source)
    validate_trials(test, "test", source)
    if train.voxels.shape[1] != test.voxels.shape[1]:
        raise DataError(
            f"{source}: train has {train.voxels.shape[1]} voxels but test has {test.voxels.shape[1]}"
        )
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(f"{source}: train images are {train.images.shape[1:]} but test images {test.images.shape[1:]}")
    if extra_images is not None:
        if extra_images.ndim != 3 or extra_images.shape[1:] != train.images.shape[1:]:
            raise DataError(
                f"{source}: extra images have shape {extra_images.shape[1:]}, expected {train.images.shape[1:]}"
            )
        if len(extra_images) == 0:
            extra_images = None
    split = hashlib.sha256()
    split.update(content_hash.encode())
    split.update(np.ascontiguousarray(train.indices, dtype=np.int64).tobytes())
    split.update(np.ascontiguousarray(test.indices, dtype=np.int64).tobytes())
    return Dataset(name, source, train, test, extra_images, split.hexdigest()[:16])


def carve_validation(train: Trials, n_val: int, seed: int) -> tuple[Trials, Trials]:
    """Split training trials into (fit, validation), stratified by label when labels are known.

    The test split is never involved: model selection and early stopping use the validation trials.
    """
    if n_val <= 0:
        return train, train.subset(np.arange(0))
    if n_val >= len(train):
        raise DataError(f"train.val_trials {n_val} leaves no fit trials out of the {len(train)} training trials")
    rng = np.random.default_rng(seed)
    labels = train.labels if train.labels is not None else np.zeros(len(train), dtype=np.int64)
    classes = np.unique(labels)
    # Largest-remainder allocation keeps the class proportions of the training trials.
    counts = np.array([np.sum(labels == c) for c in classes])
    quota = counts * n_val / len(train)
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take))[: n_val - take.sum()]:
        take[i] += 1
    val_positions = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    )
    val_positions = np.sort(val_positions)
    fit_positions = np.setdiff1d(np.arange(len(train)), val_positions)
    return train.subset(fit_positions), train.subset(val_positions)


@dataclasses.dataclass(frozen=True)
class VoxelScaler:
    """Per-voxel z-scoring with statistics of the fitting trials only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, voxels: np.ndarray) -> VoxelScaler:
        """Statistics of the given (training) voxels; constant voxels get unit scale."""
        mean = voxels.mean(axis=0)
        std = voxels.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, voxels: np.ndarray) -> np.ndarray:
        """Z-score voxels with the fitted statistics."""
        return ((voxels - self.mean) / self.std).astype(np.float32)
