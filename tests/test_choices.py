"""Settings a run chooses on its own fit trials: voxel count and decoding temperature (choices.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from vaegan_jax import choices, initialisation, metrics
from vaegan_jax import config as config_lib
from vaegan_jax.config import Config
from vaegan_jax.data import Dataset
from vaegan_jax.data.prepare import prepare, select_voxels, to_model_images
from vaegan_jax.errors import ConfigError
from vaegan_jax import load_run
from vaegan_jax.checkpoints import checkpoint_stages
from vaegan_jax.rng import member_keys
from vaegan_jax.steps import create_states
from vaegan_jax.training import resolve_image_size, run_training

from conftest import N_TRAIN, N_VOXELS

CHOOSING = [
    "model.cognitive_hidden=0", "train.cognitive_init=ridge", "train.selected_voxels=-1",
    "inference.temperature=-1", "inference.samples=4", "train.voxel_candidates=4,8,0",
    "inference.temperature_candidates=0,1", "train.choice_folds=4", "train.epochs=1,1,1",
    "inference.black_level=-1", "inference.black_level_candidates=0,0.3,0.6",
    "train.readout_mix=-1", "train.readout_mix_candidates=0,0.5",
]


@pytest.fixture(scope="module")
def choosing_config(tiny_config: Config) -> Config:
    return config_lib.override(tiny_config, CHOOSING)


@pytest.fixture(scope="module")
def chosen_run(choosing_config: Config, dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("choices") / "run"
    run_training(choosing_config, dataset, out, progress=False, log=lambda message: None)
    return out


@pytest.mark.slow
def test_the_run_records_its_choice_and_its_evidence(chosen_run: Path, dataset: Dataset) -> None:
    record = json.loads((chosen_run / "choices.json").read_text())
    candidates = record["candidates"]
    # Every count at temperature 0; above it only the two (train.choice_shortlist) best at 0.
    cold = sorted((row for row in candidates if row["temperature"] == 0.0), key=lambda row: -row["pcc"])
    assert sorted(row["selected_voxels"] for row in cold) == [0, 4, 8]
    warm = {row["selected_voxels"] for row in candidates if row["temperature"] == 1.0}
    assert warm == {row["selected_voxels"] for row in cold[:2]}
    best = max(candidates, key=lambda row: row["pcc"])
    chosen = record["chosen"]
    assert (chosen["train.selected_voxels"], chosen["inference.temperature"]) == (best["selected_voxels"], best["temperature"])
    assert record["trials"] == "fit" and record["folds"] == 4
    saved = config_lib.from_dict(json.loads((chosen_run / "config.json").read_text()))
    assert saved.train.selected_voxels == best["selected_voxels"]
    assert saved.inference.temperature == best["temperature"]
    mixes = record["readout_mix"]["candidates"]
    assert [row["readout_mix"] for row in mixes] == [0.0, 0.5] and record["readout_mix"]["criterion"] == "pcc"
    # Voxels and temperature are chosen with the first mix: its row is the best candidate's decode again.
    assert mixes[0]["pcc"] == best["pcc"] and mixes[0]["ssim"] == best["ssim"]
    assert mixes[1]["pcc"] != best["pcc"], "the mixed readout decodes other reconstructions"
    assert saved.train.readout_mix == chosen["train.readout_mix"] == max(mixes, key=lambda row: row["pcc"])["readout_mix"]
    levels = record["black_level"]["candidates"]
    assert [row["black_level"] for row in levels] == [0.0, 0.3, 0.6] and record["black_level"]["criterion"] == "ssim"
    eligible = [row for row in levels if np.isfinite(row["pcc"])]
    assert saved.inference.black_level == chosen["inference.black_level"] == max(eligible, key=lambda row: row["ssim"])["black_level"]
    assert not config_lib.needs_choice(saved)


@pytest.mark.slow
def test_the_run_decodes_at_its_chosen_black_level(chosen_run: Path, dataset: Dataset) -> None:
    run = load_run(str(chosen_run))
    images = run.with_inference(["inference.black_level=0.3"]).reconstruct(dataset.test.voxels)
    assert images.min() >= 0.0 and not np.any((images > 0.0) & (images < 0.3))
    plain = run.with_inference(["inference.black_level=0"]).reconstruct(dataset.test.voxels)
    np.testing.assert_array_equal(images, np.where(plain < 0.3, 0.0, plain))


@pytest.mark.slow
def test_checkpoints_after_the_choice_read_the_chosen_voxels(chosen_run: Path, dataset: Dataset) -> None:
    checkpoint = load_run(str(chosen_run))
    chosen = json.loads((chosen_run / "choices.json").read_text())["chosen"]["train.selected_voxels"]
    voxels = checkpoint.meta.split.voxels
    assert len(voxels) == (chosen or dataset.n_voxels)
    assert checkpoint.config.train.selected_voxels == chosen
    kernel = checkpoint.states["cognitive_encoder"].params["mu"]["kernel"]
    assert kernel.shape[-2] == len(voxels)


@pytest.fixture(scope="module")
def stage1_networks(choosing_config: Config, dataset: Dataset) -> tuple:
    """(config, members, keys, fit voxels, fit images) with freshly initialised networks."""
    config = resolve_image_size(choosing_config, dataset)
    data = prepare(dataset, 4, 0)
    states = create_states(config, dataset.n_voxels, jax.random.key(0))
    return config, [states], [member_keys(config)[0]], data.fit.voxels, data.fit.images


def test_a_trial_is_decoded_by_a_readout_fitted_without_it(stage1_networks: tuple) -> None:
    config, members, keys, voxels, images = stage1_networks
    args = ((4, 0), (0.0, 1.0), 4)
    before = choices.out_of_fold_reconstructions(config, members, keys, voxels, images, *args)
    assert set(before) == {(4, 0.0), (4, 1.0), (0, 0.0), (0, 1.0)}
    # Trial 0's own stimulus is used only by the other folds' fits: its reconstruction cannot change.
    changed = images.copy()
    changed[0] = 1.0 - changed[0]
    after = choices.out_of_fold_reconstructions(config, members, keys, voxels, changed, *args)
    for candidate in before:
        np.testing.assert_array_equal(after[candidate][:, 0], before[candidate][:, 0])
        assert not np.array_equal(after[candidate], before[candidate])


@pytest.mark.parametrize("shortlist", [0, 1])
def test_only_the_shortlisted_voxel_counts_are_decoded_above_temperature_zero(stage1_networks: tuple, shortlist: int) -> None:
    config, members, keys, voxels, images = stage1_networks
    config = config_lib.override(config, [f"train.choice_shortlist={shortlist}"])
    rows = choices.choose(config, members, keys, voxels, images).candidates
    cold = {row["selected_voxels"]: row["pcc"] for row in rows if row["temperature"] == 0.0}
    warm = {row["selected_voxels"] for row in rows if row["temperature"] == 1.0}
    assert set(cold) == {0, 4, 8}
    assert warm == ({0, 4, 8} if shortlist == 0 else {max(cold, key=cold.get)})
    # The scores do not depend on which other candidates were decoded.
    full = choices.out_of_fold_reconstructions(config, members, keys, voxels, images, (4, 8, 0), (0.0, 1.0), 4)
    for row in rows:
        pooled = full[(row["selected_voxels"], row["temperature"])].mean(axis=0)
        assert row["pcc"] == pytest.approx(float(np.mean(metrics.reconstruction_metrics(images, pooled)["pcc"])))


def test_the_black_level_is_chosen_by_ssim_on_the_winning_decode_alone(stage1_networks: tuple) -> None:
    config, members, keys, voxels, images = stage1_networks
    choice = choices.choose(config, members, keys, voxels, images)
    plain = choices.choose(config_lib.override(config, ["inference.black_level=0"]), members, keys, voxels, images)
    # Voxels and temperature are chosen as without a black level, on the same figures.
    assert choice.candidates == plain.candidates and plain.black_levels == [] and plain.black_level == 0.0
    decoded = choices.out_of_fold_reconstructions(config, members, keys, voxels, images, (choice.selected_voxels,),
                                                  (choice.temperature,), 4)[(choice.selected_voxels, choice.temperature)]
    for row in choice.black_levels:
        cleared = np.where(decoded < row["black_level"], 0.0, decoded).mean(axis=0)
        assert row["ssim"] == pytest.approx(float(np.mean(metrics.reconstruction_metrics(images, cleared)["ssim"])))
    eligible = [row for row in choice.black_levels if np.isfinite(row["pcc"])]
    assert choice.black_level == max(eligible, key=lambda row: row["ssim"])["black_level"]
    assert choices.apply(config, choice).inference.black_level == choice.black_level


@pytest.mark.slow
def test_selection_matches_a_fresh_one(chosen_run: Path, dataset: Dataset) -> None:
    checkpoint = load_run(str(chosen_run))
    train = checkpoint.config.train
    data = prepare(dataset, train.val_trials, train.split_seed)
    expected = select_voxels(data.fit.voxels, data.fit.images, train.selected_voxels)
    assert list(checkpoint.meta.split.voxels) == expected.tolist()


@pytest.mark.parametrize(
    "assignments",
    [["train.selected_voxels=-2"], ["inference.temperature=-0.5"], ["train.selected_voxels=-1"],
     ["inference.black_level=1"], ["inference.black_level=-0.5"], ["inference.black_level_candidates=0,1.5"]],
)
def test_invalid_choice_settings_are_refused(tiny_config: Config, assignments: list[str]) -> None:
    with pytest.raises(ConfigError):
        config_lib.override(tiny_config, assignments)


@pytest.mark.slow
def test_a_run_that_ends_before_stage_two_reports_from_its_stage_one_checkpoint(
    choosing_config: Config, dataset: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Stage I's checkpoints predate the choice: their cognitive encoder reads every voxel, the chosen
    # config fewer. The final report must restore them all the same, and decode them as load_run does: with
    # the weight averages stage I hands on, not its last weights.
    config = config_lib.override(choosing_config, [
        "train.voxel_candidates=4", "train.epochs=1,0,0", "train.readout_mix_candidates=0.5",
        "inference.black_level_candidates=0.3", "train.weight_average=0.9",
    ])
    _, report, _ = run_training(config, dataset, tmp_path / "run", progress=False, log=lambda message: None)
    assert report["stage"] == 1
    run = load_run(tmp_path / "run")
    test, arrays = run.prepare(dataset).test, run.checkpoint.arrays
    images = to_model_images(test.images, run.config.model.image_size)
    image_path = run.reconstructor(arrays.states, arrays.keys, images, "image", run.image_size)
    np.testing.assert_allclose(report["test"]["pcc_image"], metrics.pcc(test.images, image_path[0]).mean(), rtol=1e-5)
    chosen = json.loads((tmp_path / "run" / "choices.json").read_text())["chosen"]
    assert (chosen["train.selected_voxels"], chosen["train.readout_mix"], chosen["inference.black_level"]) == (4, 0.5, 0.3)
    # decoder_cv.py on that checkpoint (its docstring's recipe) decodes with the run's later choices.
    assert load_run(tmp_path / "run").config.train.readout_mix == config_lib.AUTO
    decoder_cv = _load_benchmark("decoder_cv")
    assert decoder_cv.main(["--ckpt", str(tmp_path / "run"), "--voxels", "4", "--temperatures", "0", "--folds", "3"]) == 0
    printed = capsys.readouterr()
    assert "the model's readout mix 0.5 and black level 0.3;" in printed.out.splitlines()[0]
    assert "stage III" not in printed.err


@pytest.mark.slow
def test_a_run_killed_between_the_choice_and_stage_two_resumes(
    choosing_config: Config, dataset: Dataset, tmp_path: Path
) -> None:
    config = config_lib.override(choosing_config, ["train.voxel_candidates=4", "train.epochs=1,1,0"])
    run = tmp_path / "run"
    run_training(config, dataset, run, progress=False, log=lambda message: None)
    # As if killed after the choice (config.json holds it) and before stage II's first checkpoint.
    shutil.rmtree(run / "checkpoints" / "2")
    _, report, _ = run_training(config, dataset, run, resume=True, progress=False, log=lambda message: None)
    assert report["stage"] == 2 and report["checkpoint_step"] == 2
    assert np.isfinite(report["test"]["pcc_fmri"])


@pytest.mark.slow
def test_decoder_cv_cross_validates_a_trained_run_over_its_training_trials(
    chosen_run: Path, capsys: pytest.CaptureFixture
) -> None:
    decoder_cv = _load_benchmark("decoder_cv")
    assert decoder_cv.main(["--ckpt", str(chosen_run), "--voxels", "0,4", "--temperatures", "0,1", "--folds", "3",
                            "--baselines", "ridge", "--black-level", "0"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    # By default the last checkpoint before stage III (the run's second), whichever is the best.
    mix = load_run(str(chosen_run), 2).config.train.readout_mix
    assert lines[0].startswith(f"{chosen_run / 'checkpoints' / '2'}: ")
    assert (f"{N_TRAIN} training trials, 3 folds, the model's readout mix {mix:g} and black level 0; test split not "
            "read") in lines[0]
    best, _ = checkpoint_stages(chosen_run)
    assert ("note: the best checkpoint, 3, is of stage III; cross-validating 2" in err) == (best == 3)
    rows = [line.split() for line in lines[2:-1]]
    assert [(row[0], int(row[1]), row[2]) for row in rows] == [
        ("D-VAE/GAN", N_VOXELS, "0.00"), ("D-VAE/GAN", N_VOXELS, "1.00"), ("D-VAE/GAN", 4, "0.00"),
        ("D-VAE/GAN", 4, "1.00"), ("ridge", N_VOXELS, "-"), ("ridge", 4, "-")]
    assert all(-1 <= float(row[3]) <= 1 for row in rows)
    assert lines[-1].startswith("D-VAE/GAN (") and ") - ridge (" in lines[-1] and "SSIM" in lines[-1]
    other_mix = 0.5 if mix == 0 else 0.0
    assert decoder_cv.main(["--ckpt", str(chosen_run), "--voxels", "4", "--temperatures", "1", "--folds", "3",
                            "--black-level", "0", "--readout-mix", str(other_mix)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"the model's readout mix {other_mix:g} and black level 0;" in lines[0]
    assert lines[2].split()[:3] == ["D-VAE/GAN", "4", "1.00"]
    assert decoder_cv.main(["--ckpt", str(chosen_run), "--voxels", "4", "--temperatures", "1", "--folds", "3",
                            "--black-level", "0.3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "black level 0.3;" in lines[0] and lines[2].split()[:3] == ["D-VAE/GAN", "4", "1.00"]
    # Stage III's generator learnt from these trials' fMRI reconstructions (the run's last step is stage III's).
    assert decoder_cv.main(["--ckpt", str(chosen_run), "--step", "3", "--voxels", "4", "--temperatures", "1",
                            "--folds", "3"]) == 0
    assert "is of stage III, whose generator learnt from these trials' fMRI reconstructions" in capsys.readouterr().err


def test_every_reader_of_the_voxels_shares_the_folds_and_sees_only_its_training_trials() -> None:
    voxels = np.random.default_rng(0).normal(size=(12, 6))
    images = np.random.default_rng(1).random((12, 3, 3))
    folds = list(choices.cross_validation_folds(voxels, images, (0, 2, 99), 4))
    assert [fold.voxel_count for fold in folds] == [0, 2] * 4
    held_out = np.concatenate([fold.held_out for fold in folds[::2]])
    assert sorted(held_out) == list(range(12))
    for fold in folds:
        assert not set(fold.train) & set(fold.held_out)
        assert fold.train_voxels.shape == (len(fold.train), fold.voxel_count or 6)
        # z-scored with the fold's training trials alone
        np.testing.assert_allclose(fold.train_voxels.mean(axis=0), 0.0, atol=1e-6)
    again = list(choices.cross_validation_folds(voxels, images, (2,), 4))
    assert [list(fold.held_out) for fold in again] == [list(fold.held_out) for fold in folds[::2]]


def _load_benchmark(name: str):
    """A script of benchmarks/ as a module."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_two_starts_from_the_readout_mix_the_run_chose(stage1_networks: tuple) -> None:
    config, (states,), _, voxels, images = stage1_networks
    model_images, prior_images = to_model_images(images, config.model.image_size), to_model_images(images[::-1], config.model.image_size)
    latents = initialisation.visual_latent_means(config, states, model_images)
    prior = initialisation.visual_latent_means(config, states, prior_images[:5])
    ridge = initialisation.fit_latent_readout(voxels, latents)
    inverted = initialisation.encoding_readout(voxels.astype(np.float64), latents.astype(np.float64), prior.astype(np.float64))
    for mix, expected in ((0.0, ridge.coef), (0.5, 0.5 * (ridge.coef + inverted.coef))):
        mixed = config_lib.override(config, [f"train.readout_mix={mix}"])
        start = initialisation.ridge_initialised_cognitive_encoder(mixed, states, voxels, model_images, prior_images[:5])
        np.testing.assert_allclose(start["cognitive_encoder"].params["mu"]["kernel"], expected, rtol=1e-4, atol=1e-6)


def test_a_blank_candidate_never_wins_the_choice() -> None:
    # A black level can clear a reconstruction to nothing: its PCC is NaN, which max() would keep if it came first.
    rows = [{"pcc": math.nan, "name": "blank"}, {"pcc": 0.2, "name": "worse"}, {"pcc": 0.5, "name": "best"},
            {"pcc": 0.5, "name": "tied"}]
    assert choices.best_by_pcc(rows)["name"] == "best"
    assert choices.best_by_pcc(rows[:1])["name"] == "blank"
