"""An embedded synthetic stand-in for the '69' data set: procedural sixes and nines and a pRF voxel model.

Nothing is downloaded and no data file ships: `generate(seed)` draws the arrays of the Donders file
(X, Y, labels, prior, description) on the fly, deterministically for a seed, in about a second.

Digits are pen strokes (a loop and a tail, as cubic Bezier curves and ellipse arcs) with random
proportions, slant, rotation, stroke width and pressure, bent by a smooth random displacement field,
rendered as anti-aliased thick lines, scaled into a 20x20 box and centred by centre of mass in 28x28,
like MNIST. Voxel responses come from a population-receptive-field model of V1, V2 and V3 with a
compressive nonlinearity, per-voxel gain and baseline, and independent plus cortically smooth noise,
scaled to the value statistics of the real Y. The noise is tuned so that ridge regression decodes the
synthetic set about as well as the real one (data.md: PCC 0.790, 2-way identification 0.933 on the
standard split; over seeds 0-19 the synthetic sets give 0.79 +- 0.02 and 0.92 +- 0.03).
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
from PIL import Image, ImageDraw

from vaegan_jax.data.dataset import Dataset
from vaegan_jax.data.loaders import from_donders_mapping
from vaegan_jax.errors import ConfigError

GENERATOR_VERSION = "1"
SIDE = 28
BOX = 20
N_PER_CLASS = 50
N_PRIOR = 2000
N_VOXELS = 3092
SIX, NINE = 1, 2

_STEM_POINTS = 14
_LOOP_POINTS = 30
_SUPER = 4
_PRESSURE_PIECES = 3


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, n: int) -> np.ndarray:
    """Points of cubic Bezier curves; p* are (B, 2), the result (B, n, 2)."""
    t = np.linspace(0.0, 1.0, n)[None, :, None]
    return (
        (1 - t) ** 3 * p0[:, None]
        + 3 * (1 - t) ** 2 * t * p1[:, None]
        + 3 * (1 - t) * t**2 * p2[:, None]
        + t**3 * p3[:, None]
    )


def _ellipse(
    centre: np.ndarray, radii: np.ndarray, tilt: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points (B, n, 2) and unit tangents along increasing theta of tilted ellipses at angles theta (B, n)."""
    cos_t, sin_t = np.cos(tilt)[:, None], np.sin(tilt)[:, None]
    ex = radii[:, :1] * np.cos(theta)
    ey = radii[:, 1:] * np.sin(theta)
    dx = -radii[:, :1] * np.sin(theta)
    dy = radii[:, 1:] * np.cos(theta)
    points = np.stack([cos_t * ex - sin_t * ey, sin_t * ex + cos_t * ey], axis=-1) + centre[:, None]
    tangent = np.stack([cos_t * dx - sin_t * dy, sin_t * dx + cos_t * dy], axis=-1)
    return points, tangent / np.linalg.norm(tangent, axis=-1, keepdims=True)


def _six_paths(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pen paths (n, S, 2) of sixes in x-right, y-down units: a tail from the top into a loop at the bottom."""
    radii = np.stack([rng.uniform(0.24, 0.36, n), rng.uniform(0.22, 0.32, n)], axis=1)
    centre = np.stack([rng.uniform(0.45, 0.55, n), np.full(n, 0.7)], axis=1)
    tilt = rng.uniform(-0.35, 0.25, n)
    # The loop is drawn left -> bottom -> right -> top -> back left (theta decreasing); it may stop short
    # of closing or overshoot past the junction.
    start = np.pi + rng.uniform(-0.35, 0.25, n)
    sweep = 2 * np.pi + rng.uniform(-0.6, 0.45, n)
    theta = start[:, None] - sweep[:, None] * np.linspace(0.0, 1.0, _LOOP_POINTS)[None]
    loop, tangent = _ellipse(centre, radii, tilt, theta)
    join, join_dir = loop[:, 0], -tangent[:, 0]
    height = rng.uniform(0.7, 1.2, n) * 2 * radii[:, 1]
    top = np.stack(
        [centre[:, 0] + radii[:, 0] * rng.uniform(-0.1, 1.0, n), centre[:, 1] - radii[:, 1] - height],
        axis=1,
    )
    # How far the first control point pulls left decides a straight diagonal or a round "C" top.
    bulge = rng.uniform(0.0, 0.35, n)
    p1 = top + np.stack([-bulge, bulge * rng.uniform(0.2, 0.8, n)], axis=1)
    p2 = join - join_dir * (rng.uniform(0.1, 0.45, n) * height)[:, None]
    tail = _bezier(top, p1, p2, join, _STEM_POINTS)
    return np.concatenate([tail[:, :-1], loop], axis=1)


def _nine_paths(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pen paths (n, S, 2) of nines: a loop at the top, then a tail down from its right side."""
    radii = np.stack([rng.uniform(0.22, 0.34, n), rng.uniform(0.18, 0.28, n)], axis=1)
    centre = np.stack([rng.uniform(0.45, 0.55, n), np.full(n, 0.3)], axis=1)
    tilt = rng.uniform(-0.35, 0.25, n)
    # From near the right, the loop runs up over the top, down the left, along the bottom and back right.
    start = rng.uniform(-0.3, 0.5, n)
    sweep = 2 * np.pi + rng.uniform(-0.5, 0.35, n)
    theta = start[:, None] - sweep[:, None] * np.linspace(0.0, 1.0, _LOOP_POINTS)[None]
    loop, _ = _ellipse(centre, radii, tilt, theta)
    join = loop[:, -1]
    height = rng.uniform(0.6, 1.1, n) * 2 * radii[:, 1]
    end = np.stack(
        [centre[:, 0] + radii[:, 0] * rng.uniform(-0.3, 0.9, n), centre[:, 1] + radii[:, 1] + height],
        axis=1,
    )
    down = np.array([0.0, 1.0])
    p1 = join + down * (rng.uniform(0.2, 0.5, n) * height)[:, None]
    # A positive hook bends the end of the tail to the left, as in many handwritten nines.
    hook = rng.uniform(-0.05, 0.3, n) * rng.binomial(1, 0.5, n)
    p2 = end + np.stack([hook, -rng.uniform(0.1, 0.4, n) * height], axis=1)
    tail = _bezier(join, p1, p2, end, _STEM_POINTS)
    return np.concatenate([loop, tail[:, 1:]], axis=1)


def _deform(rng: np.random.Generator, paths: np.ndarray) -> np.ndarray:
    """Random slant, rotation, aspect ratio and a smooth elastic displacement of pen paths (B, S, 2)."""
    n = paths.shape[0]
    centred = paths - np.array([0.5, 0.5])
    aspect = rng.uniform(0.7, 1.2, n)
    slant = rng.normal(0.2, 0.2, n)
    angle = rng.normal(0.0, 0.1, n)
    x = centred[..., 0] * aspect[:, None] - slant[:, None] * centred[..., 1]
    y = centred[..., 1]
    cos_a, sin_a = np.cos(angle)[:, None], np.sin(angle)[:, None]
    moved = np.stack([cos_a * x - sin_a * y, sin_a * x + cos_a * y], axis=-1)
    # Sum of a few low-frequency plane waves: smooth, like Simard's elastic distortions of MNIST.
    n_waves = 4
    freq = rng.normal(0.0, 2.0 * np.pi * 0.9, (n, n_waves, 2))
    phase = rng.uniform(0.0, 2 * np.pi, (n, n_waves, 1))
    amp = rng.normal(0.0, 0.008, (n, n_waves, 2))
    waves = np.sin(np.einsum("bsd,bkd->bsk", moved, freq) + phase.transpose(0, 2, 1))
    return moved + np.einsum("bsk,bkd->bsd", waves, amp)


def _render(paths: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Anti-aliased thick polylines: paths (B, S, 2) in pixel units, pen widths (B, K) in pixels -> (B, SIDE, SIDE).

    Drawn by Pillow on a canvas _SUPER times finer, then box-averaged down, which anti-aliases like the
    downscaling of the original NIST scans. The K widths apply to K consecutive pieces of the path
    (pen pressure).
    """
    out = np.empty((paths.shape[0], SIDE, SIDE), dtype=np.float32)
    fine = (paths + 0.5) * _SUPER
    pieces = np.linspace(0, paths.shape[1] - 1, widths.shape[1] + 1).round().astype(int)
    for i in range(paths.shape[0]):
        canvas = Image.new("L", (SIDE * _SUPER, SIDE * _SUPER), 0)
        pen = ImageDraw.Draw(canvas)
        for k in range(widths.shape[1]):
            width = widths[i, k] * _SUPER
            points = fine[i, pieces[k] : pieces[k + 1] + 1]
            pen.line([tuple(p) for p in points], fill=255, width=int(round(width)), joint="curve")
            for x, y in points[[0, -1]]:
                # Round caps: Pillow's lines end square.
                pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
        out[i] = np.asarray(canvas.reduce(_SUPER), dtype=np.float32) / 255.0
    return out


def _centre_of_mass_shift(images: np.ndarray) -> np.ndarray:
    """Shift each image by whole pixels so that its centre of mass lands on the centre, as MNIST did."""
    coords = np.arange(SIDE, dtype=np.float64)
    mass = images.sum(axis=(1, 2))
    cy = np.einsum("bij,i->b", images, coords) / mass
    cx = np.einsum("bij,j->b", images, coords) / mass
    centre = (SIDE - 1) / 2
    out = np.zeros_like(images)
    for i, (dy, dx) in enumerate(zip(np.rint(centre - cy).astype(int), np.rint(centre - cx).astype(int))):
        src = images[i, max(0, -dy) : SIDE - max(0, dy), max(0, -dx) : SIDE - max(0, dx)]
        out[i, max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def draw_digits(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Handwritten-like digits, (N, 28, 28) uint8 0..255 upright, for labels 1 (six) and 2 (nine)."""
    labels = np.asarray(labels)
    n = labels.size
    path_six = _six_paths(rng, n)
    path_nine = _nine_paths(rng, n)
    paths = _deform(rng, np.where((labels == SIX)[:, None, None], path_six, path_nine))
    # Pen width in final pixels (MNIST sixes and nines are fairly bold), varying a little along the path.
    widths = rng.uniform(2.0, 3.2, (n, 1)) * rng.uniform(0.85, 1.15, (n, _PRESSURE_PIECES))
    low, high = paths.min(axis=1), paths.max(axis=1)
    scale = (BOX - widths.mean(axis=1)) / (high - low).max(axis=1)
    mid = (low + high) / 2
    pixels = (paths - mid[:, None]) * scale[:, None, None] + (SIDE - 1) / 2
    images = _centre_of_mass_shift(_render(pixels, widths))
    return np.rint(images * 255).astype(np.uint8)


# Visual field: the 28x28 image spans 2 * _HALF_FIELD_DEG degrees; receptive fields reach a bit beyond it.
_HALF_FIELD_DEG = 4.0
_MAX_ECC_DEG = 7.0
# Per visual area: share of voxels, pRF size sigma = a + b * eccentricity (deg), compressive exponent.
_AREAS = (
    ("V1", 0.36, 0.25, 0.12, 0.55),
    ("V2", 0.34, 0.35, 0.18, 0.45),
    ("V3", 0.30, 0.45, 0.28, 0.35),
)
# Signal-to-noise scale of the best-placed voxels; tuned so that ridge regression decodes the synthetic set
# about as well as the real one (data.md).
_SNR = 0.7
# Share of each voxel's noise variance that is smooth on cortex (shared with its neighbours in the same
# area, as real fMRI noise is) rather than independent; the smoothness in log-polar cortical units; the
# number of smooth noise sources per area.
_SMOOTH_NOISE = 0.6
_NOISE_WIDTH = 0.3
_NOISE_SOURCES_PER_AREA = 120
# Largest strength of a pRF's suppressive surround, relative to its centre.
_SURROUND = 0.3
_REFERENCE_IMAGES = 500


@dataclasses.dataclass(frozen=True)
class _Voxels:
    """A voxel population: pRF pixel weights (V, 784), exponents (V,), area index (V,), cortical position (V, 3)."""

    weights: np.ndarray
    exponent: np.ndarray
    area: np.ndarray
    cortex: np.ndarray


def _voxel_population(rng: np.random.Generator, n_voxels: int) -> _Voxels:
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
    sigma = (a + b * ecc) * rng.lognormal(0.0, 0.2, n_voxels)
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
    rng_model: np.random.Generator, rng_noise: np.random.Generator, stimuli: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """Voxel responses (N, 3092) to stimuli (N, 28, 28) in [0, 1]; `reference` images set the response scale."""
    voxels = _voxel_population(rng_model, N_VOXELS)
    signal = _pixel_response(voxels, stimuli)
    ref = _pixel_response(voxels, reference)
    ref_sd, ref_mean = ref.std(axis=0), ref.mean(axis=0)
    # Signal-to-noise follows how much a voxel's pRF sees of the digits' variation, times a voxel-level
    # reliability: voxels looking at the empty border or beyond the image carry almost nothing.
    quality = _SNR * rng_model.lognormal(0.0, 0.5, N_VOXELS) * ref_sd / np.percentile(ref_sd, 90)
    total_sd = _per_voxel_sd(rng_model, N_VOXELS)
    noise_sd = total_sd / np.sqrt(1 + quality**2)
    gain = noise_sd * quality / np.maximum(ref_sd, 1e-12)
    baseline = rng_model.normal(0.011, 0.02, N_VOXELS)
    basis = _smooth_noise_basis(rng_model, voxels, _NOISE_WIDTH)
    n = len(stimuli)
    independent = rng_noise.normal(0.0, 1.0, (n, N_VOXELS))
    smooth = rng_noise.normal(0.0, 1.0, (n, basis.shape[0])) @ basis
    noise = np.sqrt(1 - _SMOOTH_NOISE) * independent + np.sqrt(_SMOOTH_NOISE) * smooth
    return baseline + gain * (signal - ref_mean) + noise_sd * noise


def _to_rows(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) upright images as (N, 784) rows stored column-major, like the Donders file's X."""
    return images.transpose(0, 2, 1).reshape(len(images), -1)


def _draw_prior(rng: np.random.Generator, stimuli: np.ndarray) -> np.ndarray:
    """N_PRIOR image-only sixes and nines in random order, none equal to a stimulus."""
    labels = rng.permutation(np.repeat([SIX, NINE], N_PRIOR // 2))
    prior = draw_digits(rng, labels)
    taken = {image.tobytes() for image in stimuli}
    clash = np.array([image.tobytes() in taken for image in prior])
    while clash.any():
        prior[clash] = draw_digits(rng, labels[clash])
        clash = np.array([image.tobytes() in taken for image in prior])
    return prior


@functools.lru_cache(maxsize=4)
def _generate_cached(seed: int) -> dict[str, np.ndarray]:
    """The arrays for a seed, computed once; read-only, since every caller shares them."""
    # Separate streams, so that e.g. the prior can change without changing the stimuli or the voxels.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 69]).spawn(4)]
    rng_stimuli, rng_prior, rng_model, rng_noise = streams
    labels = np.repeat(np.array([SIX, NINE], dtype=np.uint8), N_PER_CLASS)
    stimuli = draw_digits(rng_stimuli, labels)
    prior = _draw_prior(rng_prior, stimuli)
    responses = _voxel_responses(rng_model, rng_noise, stimuli / 255.0, prior[:_REFERENCE_IMAGES] / 255.0)
    arrays = {
        "X": _to_rows(stimuli),
        "Y": responses.astype(np.float64),
        "labels": labels[:, None],
        "prior": _to_rows(prior),
        "description": np.array([_description(seed)]),
    }
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def _description(seed: int) -> str:
    """The one-line `description` entry, like the Donders file's."""
    return (
        f"Synthetic stand-in for the 69 data set (vaegan_jax generator v{GENERATOR_VERSION}, seed {seed}): "
        "X stimuli (100x784 uint8, column-major 28x28), Y pRF-model voxel responses (100x3092), "
        "labels (1 = six, 2 = nine), prior (2000 image-only digits)"
    )


def generate(seed: int = 0) -> dict[str, np.ndarray]:
    """The Donders-layout arrays X, Y, labels, prior and description of the synthetic set for a seed (read-only)."""
    if int(seed) < 0:
        raise ConfigError(f"the synthetic data seed must be a non-negative integer, got {seed}")
    return dict(_generate_cached(int(seed)))


def content_hash(seed: int = 0) -> str:
    """A hash naming the synthetic set: the generator version and the seed determine every value."""
    return hashlib.sha256(f"synthetic-69 generator v{GENERATOR_VERSION} seed {int(seed)}".encode()).hexdigest()


def load_synthetic(seed: int = 0) -> Dataset:
    """The synthetic set as a Dataset with the standard split (test = trials 45-49 and 95-99)."""
    return from_donders_mapping(
        generate(seed), f"embedded synthetic (seed {int(seed)})", content_hash(seed), name="synthetic-69"
    )


def _save_mat(arrays: dict[str, np.ndarray], path: str) -> None:
    """The arrays as a MATLAB 5 file in the Donders layout, readable by loaders.load_dataset."""
    scipy.io.savemat(path, arrays, do_compression=True)


def _save_grid(arrays: dict[str, np.ndarray], path: str, n_extra: int = 20, zoom: int = 4) -> None:
    """A PNG of all stimuli (10 per row, sixes then nines) and a few image-only extras, upscaled."""
    rows = np.concatenate([arrays["X"], arrays["prior"][:n_extra]])
    images = rows.reshape(-1, SIDE, SIDE, order="F")
    per_row = 10
    pad = np.zeros((-len(images) % per_row, SIDE, SIDE), dtype=np.uint8)
    images = np.concatenate([images, pad]).reshape(-1, per_row, SIDE, SIDE)
    sheet = images.transpose(0, 2, 1, 3).reshape(images.shape[0] * SIDE, per_row * SIDE)
    Image.fromarray(sheet).resize((sheet.shape[1] * zoom, sheet.shape[0] * zoom), Image.NEAREST).save(path)


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
