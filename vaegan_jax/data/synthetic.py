"""The embedded stand-in for the '69' data set: real handwritten sixes and nines and a pRF voxel model.

Nothing is downloaded and no data file ships beyond the 1,000 MNIST sixes and nines of `handwriting.py`:
`generate(seed)` draws the arrays of the Donders file (X, Y, labels, prior, description) deterministically
for a seed, in a few seconds. The stimuli are 50 sixes and 50 nines drawn from the shipped digits; the
2,000 image-only extras are the other 900 (less any near copy of a stimulus) topped up with elastic
variants of them, since the shipped set runs short of the real file's 2,000.

Voxel responses come from a population-receptive-field model of V1, V2 and V3 with a compressive
nonlinearity, per-voxel gain and baseline, and three kinds of noise: independent, cortically smooth
(shared with neighbours in the same area) and global (a few factors every voxel loads on, as physiological
and head-motion noise do). Signal-to-noise is spread: a voxel's reliability depends only weakly on where
its receptive field lies, so informative voxels are many and individually weak, as in the real V1-V3
responses, where choosing the 450 best voxels lifts latent-ridge by only 0.003 PCC. Values are scaled to
the statistics of the real Y. The constants in `VoxelModel` were calibrated against the real file's
figures (data.md); `benchmarks/calibrate_standin.py` prints the comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import sys
from collections.abc import Sequence

import numpy as np
import scipy.io
from PIL import Image

from vaegan_jax.data.dataset import Dataset
from vaegan_jax.data.handwriting import NINE, SIX, load_digits, prior_without_stimuli
from vaegan_jax.data.loaders import from_donders_mapping
from vaegan_jax.errors import ConfigError

GENERATOR_VERSION = "2"
SIDE = 28
N_PER_CLASS = 50
N_PRIOR = 2000
N_VOXELS = 3092

# Visual field: the 28x28 image spans 2 * _HALF_FIELD_DEG degrees; receptive fields reach a bit beyond it.
_HALF_FIELD_DEG = 4.0
_MAX_ECC_DEG = 7.0
# Per visual area: share of voxels, pRF size sigma = a + b * eccentricity (deg), compressive exponent.
_AREAS = (
    ("V1", 0.36, 0.25, 0.12, 0.55),
    ("V2", 0.34, 0.35, 0.18, 0.45),
    ("V3", 0.30, 0.45, 0.28, 0.35),
)
# Largest strength of a pRF's suppressive surround, relative to its centre.
_SURROUND = 0.3
_REFERENCE_IMAGES = 500
_NOISE_SOURCES_PER_AREA = 120


@dataclasses.dataclass(frozen=True)
class VoxelModel:
    """The knobs of the voxel model that set how hard the stand-in is (defaults: calibrated, see module doc).

    snr: signal-to-noise scale of a voxel of typical reliability; reliability_spread: sd of its log-normal
    spread over voxels; footprint: how much a voxel's reliability follows its pRF's view of the digits
    (1: in proportion, 0: not at all); prf_scale: pRF size relative to the areas' nominal sizes;
    smooth_noise, global_noise: shares of each voxel's noise variance that are cortically smooth and
    global (the rest is independent); global_factors: how many global noise factors; noise_width: the
    smooth noise's width in log-polar cortical units; diffuse: signal-to-noise scale of a non-retinotopic
    response to the digits' overall shape (their first `diffuse_components` principal components), which
    every voxel carries a little of, as voxels with large or mixed receptive fields do.
    """

    snr: float = 0.5
    reliability_spread: float = 0.5
    footprint: float = 0.3
    prf_scale: float = 1.0
    smooth_noise: float = 0.3
    global_noise: float = 0.6
    global_factors: int = 5
    noise_width: float = 0.3
    diffuse: float = 0.3
    diffuse_components: int = 8


@dataclasses.dataclass(frozen=True)
class _Voxels:
    """A voxel population: pRF pixel weights (V, 784), exponents (V,), area index (V,), cortical position (V, 3)."""

    weights: np.ndarray
    exponent: np.ndarray
    area: np.ndarray
    cortex: np.ndarray


def _voxel_population(rng: np.random.Generator, n_voxels: int, prf_scale: float) -> _Voxels:
    """pRF pixel weights (V, 784) (difference of Gaussians), compressive exponents, areas and cortical positions."""
    shares = np.array([area[1] for area in _AREAS])
    area = rng.choice(len(_AREAS), size=n_voxels, p=shares / shares.sum())
    # Cortical area per unit eccentricity falls like E / (E + 0.75)^2 (magnification ~ 1 / (E + 0.75)).
    grid = np.linspace(0.0, _MAX_ECC_DEG, 2001)
    density = grid / (grid + 0.75) ** 2
    cdf = np.cumsum(density) / density.sum()
    ecc = np.interp(rng.uniform(0.0, 1.0, n_voxels), cdf, grid)
    angle = rng.uniform(0.0, 2 * np.pi, n_voxels)
    a, b, exponent = (np.array([spec[k] for spec in _AREAS])[area] for k in (2, 3, 4))
    sigma = prf_scale * (a + b * ecc) * rng.lognormal(0.0, 0.2, n_voxels)
    deg_per_px = 2 * _HALF_FIELD_DEG / SIDE
    centre = np.stack([ecc * np.cos(angle), ecc * np.sin(angle)], axis=1)
    px = (np.arange(SIDE) - (SIDE - 1) / 2) * deg_per_px
    yy, xx = np.meshgrid(px, px, indexing="ij")
    d2 = (xx.ravel()[None] - centre[:, :1]) ** 2 + (yy.ravel()[None] - centre[:, 1:]) ** 2
    area_px = deg_per_px**2
    sigma2 = sigma[:, None] ** 2
    centre_w = np.exp(-d2 / (2 * sigma2)) * area_px / (2 * np.pi * sigma2)
    surround2 = (2.5 * sigma[:, None]) ** 2
    surround_w = np.exp(-d2 / (2 * surround2)) * area_px / (2 * np.pi * surround2)
    strength = _SURROUND * rng.uniform(0.0, 1.0, (n_voxels, 1))
    # Log-polar map: distances on cortex grow like log-eccentricity, and polar angle spans the area.
    cortex = np.stack([np.log(ecc + 0.75), np.cos(angle), np.sin(angle)], axis=1)
    return _Voxels(
        weights=centre_w - strength * surround_w,
        exponent=exponent * rng.lognormal(0.0, 0.1, n_voxels),
        area=area,
        cortex=cortex,
    )


def _pixel_response(voxels: _Voxels, images: np.ndarray) -> np.ndarray:
    """Noise-free pRF responses (N, V) to images (N, 28, 28) in [0, 1]."""
    drive = images.reshape(len(images), -1) @ voxels.weights.T
    return np.sign(drive) * np.abs(drive) ** voxels.exponent


def _shape_response(
    rng: np.random.Generator, stimuli: np.ndarray, reference: np.ndarray, n_components: int
) -> np.ndarray:
    """(N, V) unit-variance responses to the stimuli's first principal components (of `reference`), random loadings."""
    ref = reference.reshape(len(reference), -1)
    mean = ref.mean(axis=0)
    _, singular, components = np.linalg.svd(ref - mean, full_matrices=False)
    scale = singular[:n_components] / np.sqrt(len(ref))
    scores = (stimuli.reshape(len(stimuli), -1) - mean) @ components[:n_components].T / scale
    loadings = rng.normal(0.0, 1.0, (n_components, N_VOXELS))
    return scores @ loadings / np.sqrt(n_components)


def _per_voxel_sd(rng: np.random.Generator, n_voxels: int) -> np.ndarray:
    """Per-voxel response sd, skewed like the real Y's: floor 0.003, median about 0.0075, a long tail to ~0.14."""
    return 0.003 * np.exp(rng.gamma(4.0, 0.25, n_voxels))


def _smooth_noise_basis(rng: np.random.Generator, voxels: _Voxels, width: float) -> np.ndarray:
    """(K, V) loadings of noise sources, each a Gaussian bump on the cortex of one area; unit variance per voxel."""
    per_area = _NOISE_SOURCES_PER_AREA
    basis = np.zeros((len(_AREAS) * per_area, len(voxels.area)))
    for k in range(len(_AREAS)):
        # Sources sit where voxels of the area are, so every part of the map has some.
        members = np.flatnonzero(voxels.area == k)
        centres = voxels.cortex[rng.choice(members, per_area, replace=False)]
        d2 = np.sum((centres[:, None] - voxels.cortex[None, members]) ** 2, axis=-1)
        basis[k * per_area : (k + 1) * per_area, members] = np.exp(-d2 / (2 * width**2))
    return basis / np.linalg.norm(basis, axis=0, keepdims=True)


def _voxel_responses(
    rng_model: np.random.Generator,
    rng_noise: np.random.Generator,
    stimuli: np.ndarray,
    reference: np.ndarray,
    model: VoxelModel,
) -> np.ndarray:
    """Voxel responses (N, 3092) to stimuli (N, 28, 28) in [0, 1]; `reference` images set the response scale."""
    voxels = _voxel_population(rng_model, N_VOXELS, model.prf_scale)
    signal = _pixel_response(voxels, stimuli)
    ref = _pixel_response(voxels, reference)
    ref_sd, ref_mean = ref.std(axis=0), ref.mean(axis=0)
    # Reliability: how much a voxel's pRF sees of the digits' variation (to the power `footprint`), times a
    # voxel-level factor; with a footprint near 0 even voxels beside the digits carry some signal.
    view = np.maximum(ref_sd / np.percentile(ref_sd, 90), 1e-6) ** model.footprint
    quality = model.snr * rng_model.lognormal(0.0, model.reliability_spread, N_VOXELS) * view
    total_sd = _per_voxel_sd(rng_model, N_VOXELS)
    noise_sd = total_sd / np.sqrt(1 + quality**2)
    gain = noise_sd * quality / np.maximum(ref_sd, 1e-12)
    shape = _shape_response(rng_model, stimuli, reference, model.diffuse_components)
    diffuse_gain = noise_sd * model.diffuse * rng_model.lognormal(0.0, model.reliability_spread, N_VOXELS)
    baseline = rng_model.normal(0.011, 0.02, N_VOXELS)
    basis = _smooth_noise_basis(rng_model, voxels, model.noise_width)
    loadings = rng_model.normal(0.0, 1.0, (model.global_factors, N_VOXELS))
    loadings /= np.linalg.norm(loadings, axis=0, keepdims=True)
    n = len(stimuli)
    independent = rng_noise.normal(0.0, 1.0, (n, N_VOXELS))
    smooth = rng_noise.normal(0.0, 1.0, (n, basis.shape[0])) @ basis
    shared = rng_noise.normal(0.0, 1.0, (n, model.global_factors)) @ loadings
    own = 1.0 - model.smooth_noise - model.global_noise
    noise = np.sqrt(own) * independent + np.sqrt(model.smooth_noise) * smooth + np.sqrt(model.global_noise) * shared
    return baseline + gain * (signal - ref_mean) + diffuse_gain * shape + noise_sd * noise


def _to_rows(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) upright images as (N, 784) rows stored column-major, like the Donders file's X."""
    return images.transpose(0, 2, 1).reshape(len(images), -1)


def _draw_stimuli(rng: np.random.Generator) -> np.ndarray:
    """N_PER_CLASS sixes then N_PER_CLASS nines drawn from the shipped digits, (100, 28, 28) uint8."""
    images, labels = load_digits()
    picks = [rng.choice(np.flatnonzero(labels == label), N_PER_CLASS, replace=False) for label in (SIX, NINE)]
    return images[np.concatenate(picks)]


@functools.lru_cache(maxsize=4)
def _generate_cached(seed: int, model: VoxelModel) -> dict[str, np.ndarray]:
    """The arrays for a seed, computed once; read-only, since every caller shares them."""
    # Separate streams, so that e.g. the prior can change without changing the stimuli or the voxels.
    streams = np.random.SeedSequence([seed, 69]).spawn(4)
    rng_stimuli, rng_model, rng_noise = (np.random.default_rng(s) for s in streams[:3])
    labels = np.repeat(np.array([SIX, NINE], dtype=np.uint8), N_PER_CLASS)
    stimuli = _draw_stimuli(rng_stimuli)
    prior = prior_without_stimuli(stimuli / 255.0, N_PRIOR, seed=int(streams[3].generate_state(1)[0]))
    prior_images = np.rint(prior.images * 255).astype(np.uint8)
    order = np.random.default_rng(streams[3]).permutation(len(prior_images))
    prior_images = prior_images[order]
    responses = _voxel_responses(
        rng_model, rng_noise, stimuli / 255.0, prior_images[:_REFERENCE_IMAGES] / 255.0, model
    )
    arrays = {
        "X": _to_rows(stimuli),
        "Y": responses.astype(np.float64),
        "labels": labels[:, None],
        "prior": _to_rows(prior_images),
        "description": np.array([_description(seed, prior.describe())]),
    }
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def _description(seed: int, prior: str) -> str:
    """The one-line `description` entry, like the Donders file's."""
    return (
        f"Stand-in for the 69 data set (vaegan_jax generator v{GENERATOR_VERSION}, seed {seed}): "
        "X stimuli (100 MNIST sixes and nines, 100x784 uint8, column-major 28x28), Y pRF-model voxel "
        f"responses (100x3092), labels (1 = six, 2 = nine), prior (2000 image-only digits: {prior})"
    )


def generate(seed: int = 0, model: VoxelModel = VoxelModel()) -> dict[str, np.ndarray]:
    """The Donders-layout arrays X, Y, labels, prior and description of the stand-in for a seed (read-only)."""
    if int(seed) < 0:
        raise ConfigError(f"the synthetic data seed must be a non-negative integer, got {seed}")
    return dict(_generate_cached(int(seed), model))


def content_hash(seed: int = 0, model: VoxelModel = VoxelModel()) -> str:
    """A hash naming the stand-in: the generator version, the seed and any non-default voxel model fix every value."""
    changed = "" if model == VoxelModel() else f" {model}"
    return hashlib.sha256(f"synthetic-69 generator v{GENERATOR_VERSION} seed {int(seed)}{changed}".encode()).hexdigest()


def load_synthetic(seed: int = 0, model: VoxelModel = VoxelModel()) -> Dataset:
    """The stand-in as a Dataset with the standard split (test = trials 45-49 and 95-99)."""
    return from_donders_mapping(
        generate(seed, model), f"embedded synthetic (seed {int(seed)})", content_hash(seed, model), name="synthetic-69"
    )


def _save_mat(arrays: dict[str, np.ndarray], path: str) -> None:
    """The arrays as a MATLAB 5 file in the Donders layout, readable by loaders.load_dataset."""
    scipy.io.savemat(path, arrays, do_compression=True, appendmat=False)


def _save_grid(arrays: dict[str, np.ndarray], path: str, n_extra: int = 20, zoom: int = 4) -> None:
    """A PNG of all stimuli (10 per row, sixes then nines) and a few image-only extras, upscaled."""
    rows = np.concatenate([arrays["X"], arrays["prior"][:n_extra]])
    images = rows.reshape(-1, SIDE, SIDE, order="F")
    per_row = 10
    pad = np.zeros((-len(images) % per_row, SIDE, SIDE), dtype=np.uint8)
    images = np.concatenate([images, pad]).reshape(-1, per_row, SIDE, SIDE)
    sheet = images.transpose(0, 2, 1, 3).reshape(images.shape[0] * SIDE, per_row * SIDE)
    Image.fromarray(sheet).resize((sheet.shape[1] * zoom, sheet.shape[0] * zoom), Image.NEAREST).save(path, format="PNG")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the synthetic set as a Donders-layout .mat file and/or a PNG grid of its images."""
    parser = argparse.ArgumentParser(
        prog="python -m vaegan_jax.data.synthetic",
        description="Write the embedded synthetic stand-in for the '69' data set (50 sixes, 50 nines with "
        "3,092 model voxels, 2,000 image-only digits).",
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--out", metavar="FILE.mat", help="write X, Y, labels, prior and description in the Donders .mat layout"
    )
    parser.add_argument(
        "--png", metavar="FILE.png", help="write a grid of the 100 stimuli and 20 extras, 4x upscaled, to look at"
    )
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    if args.out is None and args.png is None:
        parser.error("nothing to do: give --out FILE.mat and/or --png FILE.png")
    arrays = generate(args.seed)
    for path, write in ((args.out, _save_mat), (args.png, _save_grid)):
        if path is None:
            continue
        try:
            write(arrays, path)
        except OSError as exc:
            parser.exit(2, f"{parser.prog}: error: cannot write {path} ({exc.strerror or exc})\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
