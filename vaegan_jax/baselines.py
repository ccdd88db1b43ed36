"""Reference decoders every model is compared with, fitted on training trials only.

Voxels are expected already z-scored with training statistics (dataset.VoxelScaler); images are (N, H, W)
in [0, 1].
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from sklearn.linear_model import RidgeCV

# A wide log grid: on the real '69' data cross-validation picks about 1.3e3, well inside it.
RIDGE_ALPHAS = np.logspace(-1, 7, 49)


class Decoder(Protocol):
    """What a baseline offers: fit on training trials, predict images from voxels."""

    name: str

    def fit(self, voxels: np.ndarray, images: np.ndarray) -> Decoder:
        """Learn from training voxels (N, V) and images (N, H, W)."""
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

    def fit(self, voxels: np.ndarray, images: np.ndarray) -> RidgeDecoder:
        """Fit on training trials; the chosen penalty is kept in `alpha_`."""
        voxels = np.asarray(voxels, dtype=np.float64)
        images = np.asarray(images, dtype=np.float64)
        _check_fit_inputs(voxels, images)
        # RidgeCV's default efficient leave-one-out touches only the rows it is given.
        self._model = RidgeCV(alphas=self.alphas).fit(voxels, images.reshape(len(images), -1))
        self.alpha_ = float(self._model.alpha_)
        self._image_shape = images.shape[1:]
        return self

    def predict(self, voxels: np.ndarray) -> np.ndarray:
        """Predicted images (N, H, W), clipped to [0, 1]."""
        flat = self._model.predict(np.asarray(voxels, dtype=np.float64))
        return np.clip(flat, 0.0, 1.0).reshape(-1, *self._image_shape)


class MeanImageDecoder:
    """Predicts the mean training image whatever the voxels: the floor any fMRI decoder must beat."""

    name = "mean-image"

    def fit(self, voxels: np.ndarray, images: np.ndarray) -> MeanImageDecoder:
        """Store the mean of the training images."""
        images = np.asarray(images, dtype=np.float64)
        _check_fit_inputs(np.asarray(voxels), images)
        self.mean_image_ = np.clip(images.mean(axis=0), 0.0, 1.0)
        return self

    def predict(self, voxels: np.ndarray) -> np.ndarray:
        """The mean training image, once per row of voxels."""
        return np.repeat(self.mean_image_[None], np.asarray(voxels).shape[0], axis=0)
