"""What happens when a run is interrupted, killed, diverges, is repeated, or gets bad input (issue #6)."""

from __future__ import annotations

import dataclasses
import errno
import gc
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import orbax.checkpoint as ocp
import pytest

from vaegan_jax import cli, history, load_run, runs
from vaegan_jax.checkpoints import PRUNED, CheckpointStore
from vaegan_jax.errors import summary
from vaegan_jax.data import Dataset, load_dataset
from vaegan_jax.runs import RunPaths
from vaegan_jax.steps import STAGES
from vaegan_jax.training import Trainer

from conftest import (
    REPO, TINY_ARGS, assert_trees_identical, checkpoint_arrays, run_train_py, tensorboard_scalars, write_small_dataset,
)

_spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
train_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_cli)

FINAL_STEP = 5
DIVERGE_STAGE_2 = ["--set", "optim.lr_cognitive_encoder=1e30"]


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under a folder, keyed by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def train_main(argv: list[str]) -> int:
    """train.py's command line, run in this process the way `python train.py` runs it."""
    return cli.run(train_cli.main, argv)


def committed_steps(run: Path) -> list[int]:
    """Finished checkpoint steps of a run folder, from the folder names alone."""
    folder = RunPaths(run).checkpoints
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def saving(run: Path) -> bool:
    """Whether orbax is writing a checkpoint right now (its temporary folder exists)."""
    folder = RunPaths(run).checkpoints
    return folder.is_dir() and any("orbax-checkpoint-tmp" in p.name for p in folder.iterdir())


# train.py whose first checkpoint commit (orbax renames its temporary folder into place) never ends: the
# folder stays until the process is killed, so a test cannot miss the moment, however busy the machine.
STALLED_COMMIT = """
import os, runpy, sys, time
rename = os.rename
def stalled(source, target, *args, **kwargs):
    if "orbax-checkpoint-tmp" in os.fspath(source):
        time.sleep(3600)
    return rename(source, target, *args, **kwargs)
os.rename = stalled
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def start_train_py(args: list[str], stall_commit: bool = False) -> subprocess.Popen:
    script = ["-c", STALLED_COMMIT] if stall_commit else ["train.py"]
    return subprocess.Popen([sys.executable, *script, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def send_when(process: subprocess.Popen, condition: Callable[[], bool], sig: int) -> tuple[int, str, str]:
    """Send `sig` to a running train.py as soon as `condition` holds; return (exit code, stdout, stderr).

    Each condition below lasts until the signal (a checkpoint folder, a stalled commit), so checking it
    every 50 ms cannot miss it.
    """
    deadline = time.monotonic() + 240
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"train.py ended (or hung) before the moment to send {sig!r}:\n{out}\n{err}")
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=240)
    return process.returncode, out, err


# -- 1. interruption ------------------------------------------------------------------------------------


def test_sigint_and_sigterm_ask_for_a_checkpoint_then_a_second_one_aborts(capsys: pytest.CaptureFixture) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with cli.stop_on_signals() as interrupt:
            os.kill(os.getpid(), sig)
            assert interrupt.is_set()
            assert f"{signal.Signals(sig).name}: saving a checkpoint after this epoch" in capsys.readouterr().err
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), sig)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_an_aborted_run_exits_130_with_one_line(capsys: pytest.CaptureFixture) -> None:
    def aborted(argv: list[str]) -> int:
        raise KeyboardInterrupt

    assert cli.run(aborted, []) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "aborted; checkpoints completed before the signal are kept\n"


@pytest.mark.slow
def test_train_py_survives_sigint_and_sigkills_and_resumes_to_the_uninterrupted_result(
    data_file: Path, train_py_run: tuple[Path, subprocess.CompletedProcess], trained: Trainer, tmp_path: Path
) -> None:
    reference, _ = train_py_run
    run = tmp_path / "run"
    args = [*TINY_ARGS, "--data", str(data_file), "--out", str(run)]

    # Ctrl-C once the first checkpoint exists: the epoch finishes, a checkpoint is saved, exit code 130.
    code, _, err = send_when(start_train_py(args), lambda: bool(committed_steps(run)), signal.SIGINT)
    assert code == cli.EXIT_INTERRUPTED, err
    assert "SIGINT: saving a checkpoint" in err and f"continue with --resume --out {run}" in err
    interrupted_at = committed_steps(run)[-1]
    assert 1 <= interrupted_at < FINAL_STEP

    # SIGKILL while orbax writes a checkpoint, then SIGKILL just after one lands (while old ones are pruned).
    code, _, _ = send_when(start_train_py([*args, "--resume"], stall_commit=True), lambda: saving(run), signal.SIGKILL)
    assert code == -signal.SIGKILL
    killed_at = committed_steps(run)[-1]
    code, _, _ = send_when(start_train_py([*args, "--resume"]),
                           lambda: bool(committed_steps(run)) and committed_steps(run)[-1] > killed_at, signal.SIGKILL)
    assert code == -signal.SIGKILL

    finished = run_train_py([*args, "--resume"])
    assert finished.returncode == 0, finished.stderr
    assert "resuming after epoch" in finished.stdout
    # The resumed call's wall times go with its entry; stages it had nothing left of are absent.
    timing = json.loads(RunPaths(run).run_info.read_text())["resumed"][-1]["timing"]
    assert "final_report" in timing and all(timing[name]["epochs"] >= 1 for name in timing if name != "final_report")
    template = trained.checkpoint_arrays()
    assert_trees_identical(checkpoint_arrays(run, template), checkpoint_arrays(reference, template))
    ours, theirs = (json.loads(RunPaths(r).metrics.read_text()) for r in (run, reference))
    assert ours == theirs
    # Validations of epochs trained again after a kill are forgotten, not repeated.
    assert RunPaths(run).validation.read_text() == RunPaths(reference).validation.read_text()
    # Only the latest, the best and the last before stage III are left, and no temporary or half-deleted folder.
    store = CheckpointStore(RunPaths(run).checkpoints, read_only=True)
    assert sorted(p.name for p in RunPaths(run).checkpoints.iterdir()) == sorted(
        [PRUNED, *{str(store.latest_step()), str(store.best_step()), str(FINAL_STEP - 1)}])
    assert not list((RunPaths(run).checkpoints / PRUNED).iterdir())
    assert len(json.loads(RunPaths(run).run_info.read_text())["resumed"]) == 3
    # The four processes' TensorBoard logs, read back by TensorBoard's reader, hold the uninterrupted run's
    # values at every epoch; an epoch logged before a kill and trained again after it appears twice, alike.
    resumed = tensorboard_scalars(RunPaths(run).tensorboard)
    assert {tag: list(dict.fromkeys(points)) for tag, points in resumed.items()} == tensorboard_scalars(
        RunPaths(reference).tensorboard)


@pytest.mark.slow
def test_leftovers_of_a_killed_save_or_prune_are_ignored_and_removed(trained: Trainer, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(trained.paths.checkpoints, folder)
    latest = CheckpointStore(folder, read_only=True).latest_step()
    # What a SIGKILL leaves: a half-written step in orbax's temporary folder, a half-deleted one in pruned/.
    half_written = folder / f"{latest + 1}.orbax-checkpoint-tmp"
    half_deleted = folder / PRUNED / "1"
    for leftover in (half_written, half_deleted):
        shutil.copytree(folder / str(latest), leftover)
        shutil.rmtree(leftover / "state")
    store = CheckpointStore(folder)
    assert store.latest_step() == latest
    store.restore(latest, trained.checkpoint_arrays())
    store.close()
    assert not half_written.exists() and not half_deleted.exists()


# -- 2. divergence ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_on_nan_stop_exits_3_naming_stage_epoch_and_network(
    data_file: Path, tmp_path: Path, one_line_error: Callable[[], str]
) -> None:
    run = tmp_path / "run"
    code = train_main([*TINY_ARGS, "--data", str(data_file), "--out", str(run), *DIVERGE_STAGE_2, "--on-nan", "stop"])
    assert code == cli.EXIT_DIVERGED
    message = one_line_error()
    assert "diverged at stage2 epoch 1, step" in message and "cognitive_encoder (nan)" in message
    # Stage I's last checkpoint is intact and named.
    assert committed_steps(run)[-1] == 2 and message.endswith(str(RunPaths(run).checkpoints / "2"))
    assert CheckpointStore(RunPaths(run).checkpoints, read_only=True).read_meta(2)["stage"] == 1


@pytest.mark.slow
def test_on_nan_rollback_restores_the_last_checkpoint_and_goes_on_with_the_next_stage(
    data_file: Path, trained: Trainer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    code = train_main([*TINY_ARGS, "--data", str(data_file), "--out", str(run), *DIVERGE_STAGE_2,
                       "--on-nan", "rollback"])
    out = capsys.readouterr().out
    assert code == 0
    assert "warning: diverged at stage2 epoch 1" in out and "restored checkpoint 2 (stage 1, epoch 2)" in out
    assert "ended stage2 early" in out and "stage3 epoch 1/1" in out
    arrays = checkpoint_arrays(run, trained.checkpoint_arrays())
    assert all(np.all(np.isfinite(a)) for a in arrays.values() if a.dtype.kind == "f")
    assert json.loads(RunPaths(run).metrics.read_text())["stage"] == 3
    # The diverged stage II left no validation; stage III went on after stage II's epochs.
    assert [(row["step"], row["stage"]) for row in history.read(RunPaths(run).validation)] == [(1, 1), (2, 1), (5, 3)]


@pytest.mark.slow
def test_a_rollback_to_stage_one_after_the_choice_of_voxels_goes_on(
    data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Stage I's checkpoint predates the choice, so its cognitive encoder reads other voxels and a fresh one for
    # the chosen voxels stands in; the diverged epoch had taken (donated) the trainer's own.
    run = tmp_path / "run"
    choosing = ["--set", "model.cognitive_hidden=0", "--set", "train.cognitive_init=ridge",
                "--set", "train.selected_voxels=-1", "--set", "train.voxel_candidates=4,8"]
    code = train_main([*TINY_ARGS, "--data", str(data_file), "--out", str(run), *choosing, *DIVERGE_STAGE_2,
                       "--on-nan", "rollback"])
    out = capsys.readouterr().out
    assert code == 0
    assert "restored checkpoint 2 (stage 1, epoch 2)" in out and "stage3 epoch 1/1" in out
    trained_run = load_run(run)
    assert trained_run.meta.stage == 3 and len(trained_run.meta.split.voxels) in (4, 8)
    assert np.all(np.isfinite(trained_run.reconstruct(load_dataset(data_file).test.voxels)))


@pytest.mark.slow
def test_a_rollback_forgets_the_validations_after_the_checkpoint_it_restores(
    trained: Trainer, dataset: Dataset, tmp_path: Path
) -> None:
    copy = RunPaths(tmp_path / "run")
    shutil.copytree(trained.paths.root, copy.root)
    shutil.rmtree(copy.checkpoints / str(FINAL_STEP))
    restored = CheckpointStore(copy.checkpoints, read_only=True).latest_step()
    assert restored < FINAL_STEP and len(history.read(copy.validation)) == FINAL_STEP
    config = trained.config
    rollback = Trainer(dataclasses.replace(config, train=dataclasses.replace(config.train, on_nan="rollback")),
                       dataset, copy, progress=False, log=lambda message: None)
    store = CheckpointStore(copy.checkpoints, keep=rollback.kept_steps)
    try:
        rollback._handle_divergence(STAGES[2], "stage3 epoch 1", store)
    finally:
        store.close()
    assert rollback.epochs_done == restored
    assert [row["step"] for row in history.read(copy.validation)] == list(range(1, restored + 1))


@pytest.mark.slow
def test_divergence_before_the_first_checkpoint_stops_even_with_rollback(
    data_file: Path, tmp_path: Path, one_line_error: Callable[[], str]
) -> None:
    code = train_main([*TINY_ARGS, "--data", str(data_file), "--out", str(tmp_path / "run"), "--epochs", "0,2,1",
                       *DIVERGE_STAGE_2, "--on-nan", "rollback"])
    assert code == cli.EXIT_DIVERGED
    message = one_line_error()
    assert "diverged at stage2 epoch 1" in message and "no checkpoint to roll back to" in message


# -- 3. reproducibility ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_same_seed_and_config_give_bit_identical_parameters(
    trained: Trainer, train_py_run: tuple[Path, subprocess.CompletedProcess]
) -> None:
    # One run in this process, one in a fresh `python train.py`: every array of every checkpoint agrees.
    reference, _ = train_py_run
    store = CheckpointStore(trained.paths.checkpoints, read_only=True)
    assert committed_steps(reference) == store.steps()
    template = trained.checkpoint_arrays()
    for step in store.steps():
        assert_trees_identical(checkpoint_arrays(trained.paths.root, template, step),
                               checkpoint_arrays(reference, template, step))


@pytest.mark.slow
def test_run_info_records_what_is_needed_to_repeat_the_run(
    train_py_run: tuple[Path, subprocess.CompletedProcess], dataset: Dataset, data_file: Path
) -> None:
    reference, _ = train_py_run
    info = json.loads(RunPaths(reference).run_info.read_text())
    assert {"command", "started", "vaegan_jax", "git_commit", "git_dirty", "python", "packages", "devices", "host",
            "data", "preset"} <= set(info)
    # The same seed trains bit for bit on one kind of CPU; which kind ran is part of what repeats a run.
    assert info["host"]["cores"] == os.cpu_count() and info["host"]["model"]
    assert all(isinstance(flag, str) for flag in info["host"]["vector_extensions"])
    assert info["command"] == ["train.py", *TINY_ARGS, "--data", str(data_file), "--out", str(reference)]
    assert {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scikit-learn"} <= set(info["packages"])
    assert all(isinstance(version, str) for version in info["packages"].values())
    assert info["data"]["fingerprint"] == dataset.fingerprint and info["data"]["n_voxels"] == dataset.n_voxels
    assert info["git_commit"] is None or len(info["git_commit"]) == 40
    assert RunPaths(reference).config.exists()


# -- 4. bad input ----------------------------------------------------------------------------------------


@pytest.fixture
def earlier_run(train_py_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> Path:
    """A copy of a finished run that a later command must leave alone."""
    copy = tmp_path / "earlier"
    shutil.copytree(train_py_run[0], copy)
    return copy


def refuse(argv: list[str], one_line_error: Callable[[], str], *fragments: str) -> None:
    """train.py exits 2 with one `error:` line containing each fragment."""
    assert train_main(argv) == cli.EXIT_BAD_INPUT
    message = one_line_error()
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.slow
def test_out_never_replaces_an_earlier_run_without_resume_or_overwrite(
    earlier_run: Path, data_file: Path, one_line_error: Callable[[], str]
) -> None:
    before = file_hashes(earlier_run)
    refuse([*TINY_ARGS, "--data", str(data_file), "--out", str(earlier_run)], one_line_error,
           "run folder exists", "--resume", "--overwrite")
    assert file_hashes(earlier_run) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(data_file: Path, tmp_path: Path,
                                                       one_line_error: Callable[[], str]) -> None:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    refuse([*TINY_ARGS, "--data", str(data_file), "--out", str(folder), "--overwrite"], one_line_error,
           "not a run folder")
    assert (folder / "chapter1.tex").read_text() == "precious"
    # A config.json does not make a run of a folder that holds what no run writes.
    (folder / "config.json").write_text("{}")
    refuse([*TINY_ARGS, "--data", str(data_file), "--out", str(folder), "--overwrite"], one_line_error,
           "holds files no run writes (chapter1.tex)")
    assert (folder / "chapter1.tex").read_text() == "precious"


@pytest.mark.slow
def test_overwrite_keeps_the_earlier_run_when_the_new_one_cannot_start(
    earlier_run: Path, data_file: Path, one_line_error: Callable[[], str]
) -> None:
    before = file_hashes(earlier_run)
    refuse([*TINY_ARGS, "--data", str(data_file), "--out", str(earlier_run), "--overwrite", "--batch-size", "64"],
           one_line_error, "batch size 64")
    assert file_hashes(earlier_run) == before


def test_a_run_that_cannot_start_leaves_no_folder(data_file: Path, tmp_path: Path,
                                                  one_line_error: Callable[[], str]) -> None:
    out = tmp_path / "runs" / "new"
    refuse([*TINY_ARGS, "--data", str(data_file), "--out", str(out), "--batch-size", "64"], one_line_error, "batch size 64")
    assert not out.exists()


def test_an_unwritable_output_folder_is_refused_before_training(data_file: Path, tmp_path: Path,
                                                                 one_line_error: Callable[[], str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    refuse([*TINY_ARGS, "--data", str(data_file), "--out", str(blocker / "run")], one_line_error, "not writable")
    refuse([*TINY_ARGS, "--data", str(data_file), "--out", str(blocker)], one_line_error, "not a folder")


def test_a_full_disk_is_refused_before_anything_is_written(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_line_error: Callable[[], str]
) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: real(path)._replace(free=1024))
    run = tmp_path / "run"
    refuse([*TINY_ARGS, "--data", str(data_file), "--out", str(run)], one_line_error, "MiB free", "checkpoints need")
    assert not run.exists()


@pytest.mark.slow
def test_a_disk_that_fills_during_training_is_one_line_and_keeps_the_saved_checkpoints(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_line_error: Callable[[], str]
) -> None:
    real_save = ocp.CheckpointManager.save

    def save_until_full(manager: ocp.CheckpointManager, step: int, *args, **kwargs) -> bool:
        if step >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(manager, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_until_full)
    run = tmp_path / "run"
    assert train_main([*TINY_ARGS, "--data", str(data_file), "--out", str(run)]) == cli.EXIT_BAD_INPUT
    message = one_line_error()
    assert "cannot write checkpoint (OSError: [Errno 28] No space left on device)" in message
    assert message.endswith(f"the last complete one is {RunPaths(run).checkpoints / '2'}")
    monkeypatch.undo()
    assert committed_steps(run)[-1] == 2
    assert CheckpointStore(RunPaths(run).checkpoints, read_only=True).read_meta(2)["stage"] == 1
    # With room again, the run continues from there.
    assert train_main(["--resume", "--out", str(run), "--data", str(data_file), "--no-progress"]) == 0
    assert committed_steps(run)[-1] == 5 and RunPaths(run).metrics.exists()


def _truncate_array_data(step: Path) -> None:
    """Cut every array data file of a checkpoint in half."""
    for file in (step / "state").rglob("*"):
        if file.is_file() and file.parent.name == "d":
            file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated state", "foreign step folder", "foreign metadata", "no config"])
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_resume_validates_the_checkpoint_before_touching_the_run(
    earlier_run: Path, data_file: Path, one_line_error: Callable[[], str], damage: str
) -> None:
    checkpoints = RunPaths(earlier_run).checkpoints
    latest = max(committed_steps(earlier_run))
    if damage == "truncated state":
        _truncate_array_data(checkpoints / str(latest))
    elif damage == "foreign step folder":
        (checkpoints / str(latest + 1)).mkdir()
        (checkpoints / str(latest + 1) / "weights.bin").write_bytes(b"\0" * 64)
    elif damage == "foreign metadata":
        (checkpoints / str(latest) / "meta" / "metadata").write_text('{"model": "somebody else\'s"}')
    else:
        RunPaths(earlier_run).config.unlink()
    before = file_hashes(earlier_run)
    expected = {"truncated state": "cannot restore checkpoint", "foreign step folder": "unreadable checkpoint metadata",
                "foreign metadata": "not a vaegan_jax checkpoint", "no config": "nothing to resume"}[damage]
    refuse([*TINY_ARGS, "--data", str(data_file), "--out", str(earlier_run), "--resume"], one_line_error, expected)
    assert file_hashes(earlier_run) == before
    # Anything a failed restore left behind (reads that complete into a closed event loop) complains when
    # collected: here, which fails the test, rather than on the terminal at exit.
    gc.collect()


@pytest.mark.slow
def test_a_damaged_checkpoint_leaves_one_line_on_the_terminal(earlier_run: Path, data_file: Path) -> None:
    # In a fresh process orbax's abandoned read tasks would print asyncio's traceback at exit, under the error.
    _truncate_array_data(RunPaths(earlier_run).checkpoints / str(max(committed_steps(earlier_run))))
    done = run_train_py([*TINY_ARGS, "--data", str(data_file), "--out", str(earlier_run), "--resume"])
    assert done.returncode == cli.EXIT_BAD_INPUT
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot restore checkpoint" in lines[0], done.stderr


@pytest.mark.slow
def test_resume_refuses_a_damaged_config_and_other_data(
    earlier_run: Path, tmp_path: Path, one_line_error: Callable[[], str]
) -> None:
    other_data = write_small_dataset(tmp_path / "other.npz", seed=1)
    before = file_hashes(earlier_run)
    refuse([*TINY_ARGS, "--data", str(other_data), "--out", str(earlier_run), "--resume"], one_line_error,
           "checkpoint was trained on data")
    assert file_hashes(earlier_run) == before
    RunPaths(earlier_run).config.write_text('{"train": {"epochs": ')
    refuse([*TINY_ARGS, "--data", str(other_data), "--out", str(earlier_run), "--resume"], one_line_error,
           "unreadable run configuration")


def test_a_wrapped_error_is_reported_by_its_root_cause() -> None:
    cause = ValueError('FAILED_PRECONDITION: Error reading "scaler.mean/0": Truncated stream\nmore detail')
    with pytest.raises(Exception) as wrapped:
        raise Exception("Encountered error while reading array index: <bound method spec of TensorStore({") from cause
    assert summary(wrapped.value) == 'ValueError: FAILED_PRECONDITION: Error reading "scaler.mean/0": Truncated stream'
    assert summary(OSError(28, "No space left on device")) == "OSError: [Errno 28] No space left on device"


def test_debug_adds_the_traceback_and_keeps_the_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [*TINY_ARGS, "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "run")]
    assert train_main(argv) == cli.EXIT_BAD_INPUT
    plain = capsys.readouterr().err.strip().splitlines()
    assert train_main([*argv, "--debug"]) == cli.EXIT_BAD_INPUT
    debugged = capsys.readouterr().err.strip().splitlines()
    assert len(plain) == 1 and debugged[0].startswith("Traceback") and debugged[-1] == plain[0]
