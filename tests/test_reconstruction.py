"""The final report's scoring of reconstructions: the members' mean, each member, splits without trials."""

from __future__ import annotations

import math

import numpy as np

from vaegan_jax.data.dataset import VoxelScaler
from vaegan_jax.reconstruction import ensemble_scores, model_inputs, path_scores


def _images(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0.0, 1.0, shape).astype(np.float32)


def test_the_report_scores_the_members_mean_and_each_member() -> None:
    rng = np.random.default_rng(0)
    stimuli = {"val": _images(rng, 4, 16, 16), "test": _images(rng, 3, 16, 16)}
    members = {split: {path: _images(rng, 2, len(images), 16, 16) for path in ("fmri", "image")}
               for split, images in stimuli.items()}
    report = ensemble_scores(stimuli, members, [{"seed": 5, "stage1_epoch": 9}, {"seed": 5, "stage1_epoch": 7}])
    for split in ("val", "test"):
        mean = {path: images.mean(axis=0) for path, images in members[split].items()}
        assert report[split] == path_scores(stimuli[split], mean)
        for k, member in enumerate(report["members"]):
            assert (member["seed"], member["stage1_epoch"]) == (5, 9 - 2 * k)
            assert member[split] == path_scores(stimuli[split], {p: m[k] for p, m in members[split].items()})
    assert set(report["val"]) == {f"{m}_{p}" for m in ("pcc", "mse", "ssim", "ident_2way") for p in ("fmri", "image")}


def test_a_split_without_trials_scores_nothing_and_a_lone_model_lists_no_members() -> None:
    rng = np.random.default_rng(1)
    stimuli = {"test": _images(rng, 3, 16, 16)}
    members = {"test": {"fmri": _images(rng, 1, 3, 16, 16), "image": _images(rng, 1, 3, 16, 16)}}
    report = ensemble_scores(stimuli, members, [{"seed": 0}])
    assert report["val"] == {} and report["test"] and "members" not in report


def test_a_lone_trial_scores_everything_but_identification() -> None:
    rng = np.random.default_rng(2)
    stimulus, reconstruction = _images(rng, 1, 16, 16), _images(rng, 1, 16, 16)
    scores = path_scores(stimulus, {"fmri": reconstruction})
    assert math.isnan(scores["ident_2way_fmri"])
    assert all(math.isfinite(scores[f"{measure}_fmri"]) for measure in ("pcc", "mse", "ssim"))


def test_model_inputs_are_the_z_scored_selected_voxels() -> None:
    voxels = np.arange(12, dtype=np.float32).reshape(3, 4)
    scaler = VoxelScaler(np.array([1, 2, 3, 4], np.float32), np.array([1, 2, 4, 8], np.float32))
    np.testing.assert_allclose(model_inputs(voxels, scaler, np.array([3, 0])),
                               [[(3 - 4) / 8, -1.0], [(7 - 4) / 8, 3.0], [(11 - 4) / 8, 7.0]])
