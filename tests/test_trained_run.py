"""The Python API on a trained tiny run: `load_run(...).reconstruct(voxels)` and `evaluate()`, and decode.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import REPO
from vaegan_jax import cli, load_run, rng
from vaegan_jax.data import load_synthetic
from vaegan_jax.data.prepare import prepare
from vaegan_jax.errors import DataError

_spec = importlib.util.spec_from_file_location("decode_cli", REPO / "decode.py")
decode_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(decode_cli)

# Every test here reads a trained run.
pytestmark = pytest.mark.slow


def test_reconstruct_gives_eval_py_s_model_reconstructions(
    run_dir: Path, report: tuple[Path, subprocess.CompletedProcess]
) -> None:
    out, done = report
    assert done.returncode == 0, done.stderr
    with np.load(out / "reconstructions.npz") as npz:
        expected, indices = npz["rec_model"], npz["trial_indices"]
    test = load_synthetic().test
    assert indices.tolist() == test.indices.tolist()
    images = load_run(run_dir).reconstruct(test.voxels)
    assert images.shape == expected.shape and images.dtype == np.float32
    np.testing.assert_allclose(images, expected, atol=1e-6)


def test_the_run_restores_its_own_preprocessing_and_keys(run_dir: Path) -> None:
    run = load_run(run_dir)
    train = run.config.train
    data = prepare(load_synthetic(), train.val_trials, train.split_seed, train.selected_voxels, train.shipped_prior)
    np.testing.assert_array_equal(run.checkpoint.arrays.scaler.mean, data.scaler.mean)
    np.testing.assert_array_equal(run.checkpoint.arrays.scaler.std, data.scaler.std)
    assert list(run.meta.split.voxels) == data.voxel_selection.tolist() and len(run.meta.split.voxels) == 300
    np.testing.assert_array_equal(jax.random.key_data(run.checkpoint.arrays.keys),
                                  jax.random.key_data(rng.member_keys(run.config)))


@pytest.mark.parametrize("case, voxels, message", [
    ("too few voxels", lambda v: v[:, :100], "voxels: 100 voxels per row, but .* was trained on 3092"),
    ("one row as a vector", lambda v: v[0], r"expected a 2-D numeric \(trials, voxels\) array"),
    ("not numbers", lambda v: v.astype(str), "expected a 2-D numeric"),
    ("a NaN", lambda v: np.where(np.arange(v.shape[1]) == 5, np.nan, v), "NaN or infinite"),
])
def test_voxels_the_run_cannot_read_are_one_clear_error(
    run_dir: Path, case: str, voxels: Callable[[np.ndarray], np.ndarray], message: str
) -> None:
    run = load_run(run_dir)
    with pytest.raises(DataError, match=message) as error:
        run.reconstruct(voxels(load_synthetic().test.voxels))
    assert len(str(error.value).splitlines()) == 1


def test_evaluate_in_memory_is_eval_py_s_report(run_dir: Path, report: tuple[Path, subprocess.CompletedProcess]) -> None:
    written = json.loads((report[0] / "metrics.json").read_text())
    computed = load_run(run_dir).evaluate(split="test", baselines=("ridge", "mean")).metrics
    assert list(computed["methods"]) == list(written["methods"])
    for method, values in written["methods"].items():
        for measure, per_image in values["per_image"].items():
            np.testing.assert_allclose(computed["methods"][method]["per_image"][measure], per_image, atol=1e-6,
                                       err_msg=f"{method} {measure}")


@pytest.mark.parametrize("layout", ["npy", "npz", "mat"])
def test_decode_py_writes_the_reconstructions_of_a_voxel_file(run_dir: Path, tmp_path: Path, layout: str) -> None:
    voxels = load_synthetic().test.voxels
    path = tmp_path / f"scans.{layout}"
    if layout == "npy":
        np.save(path, voxels)
    elif layout == "npz":
        np.savez(path, scans=voxels)
    else:
        scipy.io.savemat(path, {"scans": voxels.astype(np.float64), "note": "two arrays: --key picks one"})
    key = [] if layout == "npy" else ["--key", "scans"]
    out = tmp_path / "decoded"
    assert cli.run(decode_cli.main, ["--run", str(run_dir), "--voxels", str(path), *key, "--out", str(out)]) == 0
    with np.load(out / "reconstructions.npz") as npz:
        np.testing.assert_allclose(npz["images"], load_run(run_dir).reconstruct(voxels), atol=1e-6)
    with Image.open(out / "reconstructions.png") as grid:
        assert grid.format == "PNG" and grid.size[0] > 10 * 28
    # An earlier output is replaced; a folder holding anything else, such as a run, is not touched.
    assert cli.run(decode_cli.main, ["--run", str(run_dir), "--voxels", str(path), *key, "--out", str(out)]) == 0
    before = (run_dir / "reconstructions.png").read_bytes()
    assert cli.run(decode_cli.main, ["--run", str(run_dir), "--voxels", str(path), *key, "--out", str(run_dir)]) == 2
    assert (run_dir / "reconstructions.png").read_bytes() == before


DECODE_BAD_INPUTS = {
    "wrong voxel count": (lambda tmp: _saved(tmp / "few.npy", np.zeros((3, 100))), "few.npy: 100 voxels per row, but"),
    "no such file": (lambda tmp: tmp / "missing.npy", "missing.npy: cannot read the file"),
    "several arrays, no key": (
        lambda tmp: _saved(tmp / "two.npz", a=np.zeros((3, 3092)), b=np.zeros((3, 3092))),
        "two.npz: holds 2 arrays (a, b); name the one",
    ),
    "not a voxel file": (lambda tmp: _text(tmp / "notes.txt"), "notes.txt: neither a readable .mat"),
    "no rows": (lambda tmp: _saved(tmp / "empty.npy", np.zeros((0, 3092))), "empty.npy: the array holds no voxel rows"),
}


def _saved(path: Path, array: np.ndarray | None = None, **arrays: np.ndarray) -> Path:
    np.save(path, array) if array is not None else np.savez(path, **arrays)
    return path


def _text(path: Path) -> Path:
    path.write_text("trial 1: 0.1 0.2\n")
    return path


@pytest.mark.parametrize("case", list(DECODE_BAD_INPUTS))
def test_decode_py_bad_input_is_one_line_naming_the_file_and_exit_code_2(
    case: str, run_dir: Path, tmp_path: Path, one_line_error: Callable[[], str]
) -> None:
    make_path, message = DECODE_BAD_INPUTS[case]
    path = make_path(tmp_path)
    argv = ["--run", str(run_dir), "--voxels", str(path), "--out", str(tmp_path / "out")]
    assert cli.run(decode_cli.main, argv) == 2
    err = one_line_error()
    assert message in err, err
    assert not (tmp_path / "out").exists()
