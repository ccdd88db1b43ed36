"""eval.py and vaegan_jax.evaluation on one tiny trained run: the report's files, a fresh process, bad inputs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from vaegan_jax import cli, metrics
from vaegan_jax.errors import ConfigError
from vaegan_jax.data import load_dataset, load_synthetic
from vaegan_jax.data.prepare import select_voxels
from vaegan_jax.baselines import RidgeDecoder
from vaegan_jax import load_run
from vaegan_jax.checkpoints import locate_checkpoint
from vaegan_jax.evaluation import BASELINE_VOXELS, SCHEMA, comparison_grid, evaluate, evaluate_run

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("eval_cli", REPO / "eval.py")
eval_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_cli)

MEASURES_10 = ["pcc", "mse", "ssim", "ssim_gaussian11", "ident_2way", "ident_5way", "ident_10way"]


@pytest.mark.slow
def test_a_checkpoint_evaluates_in_a_fresh_process(report: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, done = report
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    rows = [line.split()[0] for line in done.stdout.splitlines() if line.split()]
    assert rows[1:5] == ["method", "model", "ridge", "mean"]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "reconstructions.npz", "reconstructions.png"]
    assert [p.name for p in out.parent.iterdir()] == ["eval"]  # no temporary folder left beside it


def _is_number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_schema(doc: dict[str, Any]) -> None:
    """The structure the evaluation module's docstring documents for metrics.json."""
    assert doc["schema"] == SCHEMA
    assert isinstance(doc["created"], str) and isinstance(doc["vaegan_jax"], str)
    ckpt = doc["checkpoint"]
    assert set(ckpt) == {
        "run", "path", "step", "selected_by", "stage", "epoch_in_stage", "val_score", "inference", "inference_as_trained",
    }
    assert set(ckpt["inference"]) == {"samples", "temperature", "black_level"} and isinstance(ckpt["inference_as_trained"], bool)
    assert isinstance(ckpt["step"], int) and ckpt["stage"] in (1, 2, 3) and _is_number_or_null(ckpt["val_score"])
    assert ckpt["selected_by"] in ("best validation score", "--step", "checkpoint folder")
    data = doc["data"]
    assert set(data) == {"name", "source", "fingerprint", "n_voxels", "image_size", "trained_on", "same_as_training"}
    assert isinstance(data["same_as_training"], bool)
    protocol = doc["protocol"]
    assert protocol["split"] in ("test", "val", "train")
    n = protocol["n_trials"]
    assert len(protocol["trial_indices"]) == n and all(isinstance(i, int) for i in protocol["trial_indices"])
    assert protocol["data_range"] == [0.0, 1.0] and len(protocol["resolution"]) == 2
    assert set(protocol["ssim_windows"]) == {"ssim", "ssim_gaussian11"}
    assert protocol["n_ways"] == [k for k in (2, 5, 10) if k <= n]
    assert protocol["baselines_fitted_on"]["split"] == "train"
    assert isinstance(protocol["baselines_fitted_on"]["n_extra_images"], int)
    for key in ("split_description", "identification", "aggregate", "voxels"):
        assert isinstance(protocol[key], str)
    assert isinstance(protocol["n_boot"], int) and isinstance(protocol["bootstrap_seed"], int)
    measures = doc["measures"]
    assert measures == ["pcc", "mse", "ssim", "ssim_gaussian11"] + [f"ident_{k}way" for k in protocol["n_ways"]]
    assert next(iter(doc["methods"])) == "model"
    for method in doc["methods"].values():
        assert set(method) == {"kind", "decoder", "fitted", "aggregate", "per_image"}
        assert method["kind"] in ("model", "baseline")
        assert all(_is_number_or_null(v) for v in method["fitted"].values())
        assert list(method["aggregate"]) == measures and list(method["per_image"]) == measures
        for measure in measures:
            summary = method["aggregate"][measure]
            assert set(summary) == {"mean", "sd", "ci95", "n"} and summary["n"] == n
            assert all(_is_number_or_null(v) for v in [summary["mean"], summary["sd"], *summary["ci95"]])
            assert len(summary["ci95"]) == 2
            assert len(method["per_image"][measure]) == n
            assert all(_is_number_or_null(v) for v in method["per_image"][measure])


@pytest.mark.slow
def test_metrics_json_follows_its_schema(report: tuple[Path, subprocess.CompletedProcess], run_dir: Path) -> None:
    doc = json.loads((report[0] / "metrics.json").read_text())
    check_schema(doc)
    assert doc["measures"] == MEASURES_10
    assert list(doc["methods"]) == ["model", "ridge", "mean"]
    assert doc["protocol"]["split"] == "test" and doc["protocol"]["resolution"] == [28, 28]
    assert doc["protocol"]["trial_indices"] == [45, 46, 47, 48, 49, 95, 96, 97, 98, 99]
    assert doc["checkpoint"]["path"] == str(run_dir / "checkpoints" / str(doc["checkpoint"]["step"]))
    assert doc["data"]["same_as_training"] and doc["data"]["source"] == "embedded synthetic (seed 0)"
    assert doc["methods"]["ridge"]["fitted"]["alpha_"] > 0
    assert doc["protocol"]["baselines_fitted_on"] == {"split": "train", "n_trials": 86, "n_extra_images": 0}


@pytest.mark.slow
def test_figures_equal_those_recomputed_from_the_npz(report: tuple[Path, subprocess.CompletedProcess]) -> None:
    doc = json.loads((report[0] / "metrics.json").read_text())
    with np.load(report[0] / "reconstructions.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    assert arrays["trial_indices"].tolist() == doc["protocol"]["trial_indices"]
    assert arrays["methods"].tolist() == list(doc["methods"])
    for name, method in doc["methods"].items():
        per_image = metrics.reconstruction_metrics(arrays["stimuli"], arrays[f"rec_{name}"], (2, 5, 10))
        for measure, values in per_image.items():
            expected = metrics.summarize(values, doc["protocol"]["n_boot"], doc["protocol"]["bootstrap_seed"])
            got = method["aggregate"][measure]
            np.testing.assert_allclose(method["per_image"][measure], values, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose([got["mean"], got["sd"], *got["ci95"]],
                                       [expected["mean"], expected["sd"], *expected["ci95"]], rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_png_is_the_labelled_grid_of_the_npz(report: tuple[Path, subprocess.CompletedProcess]) -> None:
    with np.load(report[0] / "reconstructions.npz") as npz:
        stimuli, methods = npz["stimuli"], npz["methods"].tolist()
        grid = comparison_grid(stimuli, {name: npz[f"rec_{name}"] for name in methods})
    png = np.asarray(Image.open(report[0] / "reconstructions.png"))
    # Four rows (stimulus, model, ridge, mean) of 28x28 cells upscaled 3x with 2-pixel gaps; ten columns.
    assert png.shape[0] == 4 * (28 * 3 + 2) + 2
    assert png.shape[1] > 10 * (28 * 3 + 2)
    np.testing.assert_array_equal(png, grid)


@pytest.mark.slow
def test_the_run_tensorboard_gets_the_eval_figures(
    report: tuple[Path, subprocess.CompletedProcess], run_dir: Path
) -> None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    tags = set()
    for events in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        tags.update(value.tag for event in EventFileLoader(str(events)).Load() for value in event.summary.value)
    assert {"eval/test/pcc/model", "eval/test/ssim_gaussian11/ridge", "eval/test/ident_10way/mean"} <= tags
    assert "eval/test/reconstructions" in tags


def _synthetic_npz(path: Path, keep_voxels: int | None = None, crop: int = 0) -> Path:
    """The embedded synthetic set saved in the project's .npz layout (optionally with fewer voxels, or its images
    cropped by `crop` pixels on every side)."""
    dataset = load_synthetic()
    voxels = slice(None, keep_voxels)
    pixels = slice(crop, -crop or None)
    np.savez(
        path,
        train_images=dataset.train.images[:, pixels, pixels], train_voxels=dataset.train.voxels[:, voxels],
        test_images=dataset.test.images[:, pixels, pixels], test_voxels=dataset.test.voxels[:, voxels],
        train_labels=dataset.train.labels, test_labels=dataset.test.labels,
    )
    return path


@pytest.mark.slow
def test_other_data_warns_once_and_the_val_split_evaluates(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Also: the checkpoints/ folder as --ckpt, and a baseline list other than the default.
    data = _synthetic_npz(tmp_path / "copy.npz")
    out = tmp_path / "val"
    argv = ["--ckpt", str(run_dir / "checkpoints"), "--data", str(data), "--split", "val",
            "--baselines", "latent-ridge,ridge", "--out", str(out)]
    assert cli.run(eval_cli.main, argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and "trained on data" in err[0]
    doc = json.loads((out / "metrics.json").read_text())
    check_schema(doc)
    assert doc["protocol"]["split"] == "val" and doc["protocol"]["n_trials"] == 4
    assert list(doc["methods"]) == ["model", "latent-ridge", "ridge"] and doc["protocol"]["n_ways"] == [2]
    assert not doc["data"]["same_as_training"]


@pytest.mark.slow
def test_other_data_reach_the_model_as_in_training(run_dir: Path, tmp_path: Path) -> None:
    # The training file's trials without labels: its validation split is carved unstratified, so the fit trials,
    # their voxel statistics and their best voxels differ from training's. The encoder must still read its own.
    dataset = load_synthetic()
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, train_images=dataset.train.images, train_voxels=dataset.train.voxels,
             test_images=dataset.test.images, test_voxels=dataset.test.voxels)
    run = load_run(run_dir)
    rebuilt = run.prepare(load_dataset(unlabelled), warn=lambda message: None)
    assert tuple(rebuilt.fit.indices.tolist()) != run.meta.split.fit
    assert tuple(select_voxels(rebuilt.fit.voxels, rebuilt.fit.images, 300).tolist()) != run.meta.split.voxels
    own = run.evaluate(split="test", baselines=(), warn=lambda message: None)
    other = run.evaluate(unlabelled, split="test", baselines=(), warn=lambda message: None)
    np.testing.assert_array_equal(other.arrays["rec_model"], own.arrays["rec_model"])
    np.testing.assert_array_equal(other.arrays["rec_model"], run.reconstruct(dataset.test.voxels))


@pytest.mark.slow
def test_baselines_read_every_voxel_unless_told_to_read_the_selection(run_dir: Path, tmp_path: Path) -> None:
    reports = {
        voxels: evaluate_run(run_dir, split="val", out=tmp_path / voxels, baselines=("ridge",), baseline_voxels=voxels)[1]
        for voxels in BASELINE_VOXELS
    }
    data = load_run(run_dir).prepare(load_synthetic(), warn=print)
    assert len(data.voxel_selection) == 300
    for voxels, read in (("all", lambda t: t.voxels), ("selected", data.model_voxels)):
        expected = RidgeDecoder().fit(read(data.fit), data.fit.images).predict(read(data.val))
        np.testing.assert_allclose(reports[voxels].arrays["rec_ridge"], expected, atol=1e-6)
        assert reports[voxels].metrics["protocol"]["voxels"].endswith(
            "the baselines the same ones" if voxels == "selected" else "the baselines all"
        )
    np.testing.assert_array_equal(reports["all"].arrays["rec_model"], reports["selected"].arrays["rec_model"])


@pytest.mark.slow
def test_the_evaluated_trials_reach_every_method_through_their_voxels_alone(run_dir: Path) -> None:
    # The baselines learn from the fit trials alone, as the networks did: other stimuli on the test trials,
    # or other validation trials altogether, change no method's reconstructions of the test trials.
    checkpoint = load_run(run_dir)
    dataset = load_synthetic()
    val_rows = np.isin(dataset.train.indices, checkpoint.meta.split.val)
    train_voxels, train_images = dataset.train.voxels.copy(), dataset.train.images.copy()
    train_voxels[val_rows] = np.random.default_rng(0).normal(0.0, 10.0, train_voxels[val_rows].shape)
    train_images[val_rows] = 1.0 - train_images[val_rows]
    variants = {
        "as recorded": dataset,
        "other test stimuli": dataclasses.replace(dataset, test=dataclasses.replace(dataset.test, images=1.0 - dataset.test.images)),
        "other validation trials": dataclasses.replace(
            dataset, train=dataclasses.replace(dataset.train, voxels=train_voxels, images=train_images)
        ),
    }
    methods = ("ridge", "mean", "latent-ridge")
    reconstructions = {}
    for name, variant in variants.items():
        data = checkpoint.prepare(variant, warn=pytest.fail)
        arrays = evaluate(checkpoint, variant, data, "test", methods).arrays
        reconstructions[name] = {method: arrays[f"rec_{method}"] for method in ("model", *methods)}
    for name in ("other test stimuli", "other validation trials"):
        for method, images in reconstructions[name].items():
            np.testing.assert_allclose(images, reconstructions["as recorded"][method], atol=1e-6, err_msg=f"{name}: {method}")


@pytest.mark.slow
def test_eval_can_decode_otherwise_and_says_so(run_dir: Path, tmp_path: Path) -> None:
    trained = load_run(run_dir).config.inference
    assert trained.samples == 0
    _, as_trained = evaluate_run(run_dir, split="val", out=tmp_path / "a", baselines=())
    _, sampled = evaluate_run(run_dir, split="val", out=tmp_path / "b", baselines=(),
                              inference=["inference.samples=8", "inference.temperature=2"])
    assert as_trained.metrics["checkpoint"]["inference_as_trained"]
    assert sampled.metrics["checkpoint"]["inference"] == {"samples": 8, "temperature": 2.0, "black_level": 0.0}
    assert not sampled.metrics["checkpoint"]["inference_as_trained"]
    assert np.abs(sampled.arrays["rec_model"] - as_trained.arrays["rec_model"]).max() > 1e-3
    with pytest.raises(ConfigError, match="changes only inference"):
        evaluate_run(run_dir, split="val", out=tmp_path / "c", baselines=(), inference=["loss.gamma=1"])


@pytest.mark.slow
def test_the_three_ways_to_name_a_checkpoint(run_dir: Path) -> None:
    checkpoints = run_dir / "checkpoints"
    assert locate_checkpoint(run_dir, None) == (run_dir, checkpoints, None, "best validation score")
    assert locate_checkpoint(checkpoints, 3) == (run_dir, checkpoints, 3, "--step")
    assert locate_checkpoint(checkpoints / "3", None) == (run_dir, checkpoints, 3, "checkpoint folder")


def _tampered_copy(run_dir: Path, tmp_path: Path, change: Callable[[Path], None]) -> Path:
    """A copy of the run with `change` applied to every checkpoint folder."""
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval-*"))
    for step in (copy / "checkpoints").iterdir():
        if step.name.isdigit():
            change(step)
    return copy


def _remove_array_data(step: Path) -> None:
    shutil.rmtree(step / "state" / "ocdbt.process_0")


def _edit_meta(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(step: Path) -> None:
        meta_file = step / "meta" / "metadata"
        meta = json.loads(meta_file.read_text())
        edit(meta)
        meta_file.write_text(json.dumps(meta))

    return change


BAD_INPUTS = {
    "missing checkpoint": (lambda run, tmp: ["--ckpt", str(tmp / "nowhere")], "does not exist; expected a run folder"),
    "empty checkpoint folder": (lambda run, tmp: ["--ckpt", str(tmp)], "no checkpoints"),
    "corrupt checkpoint": (
        lambda run, tmp: ["--ckpt", str(_tampered_copy(run, tmp, _remove_array_data))],
        "cannot restore checkpoint",
    ),
    "no config": (
        lambda run, tmp: ["--ckpt", str(_tampered_copy(run, tmp, _edit_meta(lambda m: m.pop("config"))))],
        "the checkpoint records no config",
    ),
    "other format version": (
        lambda run, tmp: ["--ckpt", str(_tampered_copy(run, tmp, _edit_meta(lambda m: m.update(format_version=99))))],
        "checkpoint format 99 was written by another version",
    ),
    "other voxel selection": (
        lambda run, tmp: ["--ckpt", str(_tampered_copy(run, tmp, _edit_meta(
            lambda m: m["split"].update(voxels=m["split"]["voxels"][::-1]))))],
        "the selected voxels rebuilt from the config differ",
    ),
    "fewer voxels": (
        lambda run, tmp: ["--ckpt", str(run), "--data", str(_synthetic_npz(tmp / "small.npz", keep_voxels=100))],
        "100 voxels, but",
    ),
    "other image size": (
        lambda run, tmp: ["--ckpt", str(run), "--data", str(_synthetic_npz(tmp / "cropped.npz", crop=2))],
        "24x24 images, but",
    ),
    "unwritable output": (
        lambda run, tmp: ["--ckpt", str(run), "--out", str(_file(tmp / "file") / "out")],
        "output folder is not writable",
    ),
    "output holds other files": (
        lambda run, tmp: ["--ckpt", str(run), "--out", str(_file(tmp / "mine" / "notes.txt").parent)],
        "exists and is not an earlier evaluation folder",
    ),
    "no such step": (lambda run, tmp: ["--ckpt", str(run), "--step", "999"], "no complete checkpoint 999"),
    "step contradicts folder": (
        lambda run, tmp: ["--ckpt", str(run / "checkpoints" / "3"), "--step", "2"], "--step 2 contradicts"
    ),
    "unknown baseline": (
        lambda run, tmp: ["--ckpt", str(run), "--baselines", "ridge,oracle"], "unknown baseline 'oracle'"
    ),
}


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_code_2(
    case: str, run_dir: Path, tmp_path: Path, one_line_error: Callable[[], str]
) -> None:
    make_argv, message = BAD_INPUTS[case]
    argv = make_argv(run_dir, tmp_path)
    before = sorted(p.name for p in run_dir.iterdir())
    files_before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert cli.run(eval_cli.main, argv) == 2
    err = one_line_error()
    assert message in err, err
    # Nothing written: no report folder in the run, no new or temporary files anywhere under tmp_path.
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert sorted(str(p) for p in tmp_path.rglob("*")) == files_before


def test_a_bad_split_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main(["--ckpt", "x", "--split", "holdout"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_an_abbreviated_option_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    # `cli.run` shows tracebacks only for the literal --debug; an abbreviation such as --deb must not pass for it.
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main(["--ckpt", "x", "--deb"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --deb" in capsys.readouterr().err


def test_nan_figures_become_null() -> None:
    from vaegan_jax.evaluation import _json_safe

    assert _json_safe({"a": (math.nan, 1.0), "b": [math.inf]}) == {"a": [None, 1.0], "b": [None]}
