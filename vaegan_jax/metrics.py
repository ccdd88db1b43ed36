"""Reconstruction measures of the evaluation protocol: images (N, H, W) in [0, 1] at native resolution."""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

SSIM_WINDOWS = ("uniform7", "gaussian11")


def _check_pair(true: np.ndarray, rec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(true, dtype=np.float64)
    rec = np.asarray(rec, dtype=np.float64)
    if true.ndim != 3:
        raise ValueError(f"images must be an (N, H, W) array, got shape {true.shape}")
    if true.shape != rec.shape:
        raise ValueError(f"stimuli {true.shape} and reconstructions {rec.shape} differ in shape")
    if true.shape[0] == 0:
        raise ValueError("no images to compare")
    return true, rec


def _standardized_rows(images: np.ndarray) -> np.ndarray:
    # Rows of unit norm around their mean: their dot products are Pearson correlations.
    flat = images.reshape(images.shape[0], -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    # A constant image has no defined correlation; NaN keeps that visible instead of a fake 0.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, centred / norm, np.nan)


def pcc(true: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """Pearson correlation of each flattened reconstruction with its stimulus, shape (N,)."""
    true, rec = _check_pair(true, rec)
    return np.sum(_standardized_rows(true) * _standardized_rows(rec), axis=1)


def mse(true: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """Mean squared pixel error of each reconstruction, shape (N,)."""
    true, rec = _check_pair(true, rec)
    return np.mean((true - rec) ** 2, axis=(1, 2))


def ssim(true: np.ndarray, rec: np.ndarray, window: str = "uniform7") -> np.ndarray:
    """SSIM of each reconstruction (scikit-image, data_range 1): 'uniform7' default or 'gaussian11', shape (N,)."""
    true, rec = _check_pair(true, rec)
    if window == "uniform7":
        options = {}
    elif window == "gaussian11":
        # Wang et al. (2004), as in MATLAB, tf.image.ssim and dm-pix.
        options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    else:
        raise ValueError(f"unknown SSIM window {window!r}; expected one of {SSIM_WINDOWS}")
    return np.array([structural_similarity(t, r, data_range=1.0, **options) for t, r in zip(true, rec)])


def identification_accuracy(true: np.ndarray, rec: np.ndarray, n_way: int = 2) -> np.ndarray:
    """Per-reconstruction n-way identification accuracy by correlation with the stimuli, shape (N,).

    Reconstruction i succeeds against a set of n-1 other stimuli when it correlates more (strictly) with
    its own stimulus than with each of them. The value is the exact mean over all such sets, so it needs
    no random draws: with k the number of other stimuli it beats one-to-one, it is C(k, n-1) / C(N-1, n-1).
    For n = 2 that is the fraction of ordered pairs (i, j), j != i, with corr(rec_i, stim_i) > corr(rec_i, stim_j).
    Ties and undefined correlations (a constant image) count as failures.
    """
    true, rec = _check_pair(true, rec)
    n = true.shape[0]
    if n_way < 2:
        raise ValueError(f"n-way identification needs n_way >= 2, got {n_way}")
    if n_way > n:
        raise ValueError(f"{n_way}-way identification needs at least {n_way} images, got {n}")
    corr = _standardized_rows(rec) @ _standardized_rows(true).T
    own = np.diag(corr)
    beaten = np.sum(own[:, None] > corr, axis=1)
    total = math.comb(n - 1, n_way - 1)
    return np.array([math.comb(int(k), n_way - 1) / total for k in beaten])


def reconstruction_metrics(
    true: np.ndarray, rec: np.ndarray, n_ways: tuple[int, ...] = (2,)
) -> dict[str, np.ndarray]:
    """All per-image measures: pcc, mse, ssim, ssim_gaussian11 and ident_{n}way for each n <= N in n_ways."""
    true, rec = _check_pair(true, rec)
    results = {
        "pcc": pcc(true, rec),
        "mse": mse(true, rec),
        "ssim": ssim(true, rec, "uniform7"),
        "ssim_gaussian11": ssim(true, rec, "gaussian11"),
    }
    for n_way in n_ways:
        if n_way <= true.shape[0]:
            results[f"ident_{n_way}way"] = identification_accuracy(true, rec, n_way)
    return results


def paired_difference(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """Mean of the per-image differences first - second and its standard error (sample sd / sqrt(N))."""
    difference = np.asarray(first, np.float64).ravel() - np.asarray(second, np.float64).ravel()
    if difference.size < 2:
        raise ValueError(f"a paired difference needs at least 2 images, got {difference.size}")
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(difference.size))


def summarize(per_image: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean, sample sd and 95% percentile-bootstrap interval of the mean of per-image values, as floats."""
    values = np.asarray(per_image, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("no values to summarize")
    rng = np.random.default_rng(seed)
    boot_means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    low, high = np.percentile(boot_means, [2.5, 97.5])
    return {
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "ci95": (float(low), float(high)),
        "n": int(values.size),
    }
