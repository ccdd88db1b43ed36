"""The model's reconstructions and their scores: the one path that validation, the final report, eval.py and
`load_run` all take from inputs to images to figures.

Reconstructions are deterministic: BatchNorm's running statistics, and the posterior mean or the mean of the
generator over posterior draws fixed by the members' decode keys (`config.inference`). Images come back at
the stimulus resolution with pixels in [0, 1], one per member; the model's own reconstruction is their mean.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from vaegan_jax import metrics, rng
from vaegan_jax.config import Config
from vaegan_jax.data.dataset import VoxelScaler
from vaegan_jax.data.prepare import clear_faint_pixels, to_native_images
from vaegan_jax.sharding import fetch, replicate
from vaegan_jax.steps import States, make_reconstruct

# Which encoder each path reads: voxels through the cognitive encoder, stimuli through the visual one.
PATHS = {"fmri": "cognitive_encoder", "image": "visual_encoder"}
# The measures training logs and reports, as means over trials.
SUMMARY_METRICS = ("pcc", "mse", "ssim", "ident_2way")
# The summary measures on which a lower figure is the better one.
LOWER_IS_BETTER = frozenset({"mse"})


class Reconstructor:
    """Each member's reconstructions by either path, compiled once for a config and reused for every call."""

    def __init__(self, config: Config, mesh: Mesh) -> None:
        self.mesh = mesh
        self.black_levels = {"fmri": config.inference.black_level_in_use, "image": 0.0}
        self._programs = {
            path: jax.jit(jax.vmap(make_reconstruct(config, encoder), in_axes=(0, None, 0)))
            for path, encoder in PATHS.items()
        }

    def __call__(self, states: States, keys: jax.Array, inputs: jax.Array | np.ndarray, path: str, size: int) -> np.ndarray:
        """(member, trial, size, size) images in [0, 1] of `inputs`: the encoder's own inputs (z-scored, selected
        voxels for "fmri"; model-scaled images for "image"), the fMRI path's cleared below its black level."""
        images = fetch(self._programs[path](states, replicate(inputs, self.mesh), rng.decode(keys)))
        return np.stack([clear_faint_pixels(to_native_images(member, size), self.black_levels[path]) for member in images])


def model_inputs(voxels: np.ndarray, scaler: VoxelScaler, selection: np.ndarray) -> np.ndarray:
    """Raw voxel rows as the cognitive encoder reads them: z-scored with the fit trials' statistics, then selected."""
    return scaler.transform(voxels)[:, selection]


def per_image_scores(
    stimuli: np.ndarray, reconstructions: dict[str, np.ndarray], n_ways: tuple[int, ...] = (2,)
) -> dict[str, dict[str, np.ndarray]]:
    """Each method's (or path's) per-image measures against the stimuli (metrics.py)."""
    return {name: metrics.reconstruction_metrics(stimuli, images, n_ways) for name, images in reconstructions.items()}


def path_scores(stimuli: np.ndarray, reconstructions: dict[str, np.ndarray]) -> dict[str, float]:
    """The mean over trials of each SUMMARY_METRICS measure, per path: {"pcc_fmri": ..., "pcc_image": ...}; NaN for
    identification among fewer trials than it needs."""
    scores = per_image_scores(stimuli, reconstructions)
    return {f"{measure}_{path}": float(np.mean(per_image[measure])) if measure in per_image else math.nan
            for path, per_image in scores.items() for measure in SUMMARY_METRICS}


def ensemble_scores(
    stimuli: dict[str, np.ndarray], members: dict[str, dict[str, np.ndarray]], origins: list[dict[str, float]]
) -> dict[str, Any]:
    """The final report's figures: `path_scores` of the members' mean for "val" and "test" (empty for a split
    without trials), and of each member, with its origin (`config.member_origins`), for an ensemble.
    `members[split][path]` is (member, trial, H, W)."""

    def scores(split: str, k: int | None) -> dict[str, float]:
        if split not in members:
            return {}
        picked = {path: images.mean(axis=0) if k is None else images[k] for path, images in members[split].items()}
        return path_scores(stimuli[split], picked)

    report: dict[str, Any] = {split: scores(split, None) for split in ("val", "test")}
    if len(origins) > 1:
        report["members"] = [{**origin, **{split: scores(split, k) for split in ("val", "test")}}
                             for k, origin in enumerate(origins)]
    return report
