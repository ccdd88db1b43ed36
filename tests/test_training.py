"""The three-stage trainer on the tiny preset: checkpoints, TensorBoard logs, the run folder and train.py."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from vaegan_jax import config as config_lib
from vaegan_jax import history, metrics
from vaegan_jax.baselines import RidgeDecoder
from vaegan_jax.checkpoints import FORMAT_VERSION, CheckpointStore
from vaegan_jax.config import Config
from vaegan_jax.data import Dataset
from vaegan_jax.steps import STAGES, TrainState
from vaegan_jax.runs import RunPaths
from vaegan_jax.errors import Interrupted
from vaegan_jax.training import Trainer, measures_ridge_leads

from conftest import N_TEST, N_TRAIN, assert_trees_identical, checkpoint_arrays, flat_arrays

# Every test here reads a whole training run (or makes one).
pytestmark = pytest.mark.slow

EPOCHS = (2, 2, 1)


@pytest.fixture(scope="module")
def events(trained: Trainer) -> event_accumulator.EventAccumulator:
    """The trained run's TensorBoard logs, read by TensorBoard's own reader."""
    accumulator = event_accumulator.EventAccumulator(
        str(trained.paths.tensorboard), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0}
    )
    accumulator.Reload()
    return accumulator


def test_the_tiny_preset_trains_the_epochs_these_tests_assume(trained: Trainer) -> None:
    assert trained.config.train.epochs == EPOCHS
    assert trained.config.train.eval_every == trained.config.train.checkpoint_every == 1


def test_tensorboard_has_every_learners_losses_and_norms_per_epoch(events: event_accumulator.EventAccumulator) -> None:
    scalars = set(events.Tags()["scalars"])
    offset = 0
    for stage, epochs in zip(STAGES, EPOCHS):
        for learner in stage.learners:
            for kind in ("loss", "grad_norm", "param_norm"):
                tag = f"{stage.name}/{kind}/{learner}"
                assert tag in scalars, tag
                assert [e.step for e in events.Scalars(tag)] == list(range(offset + 1, offset + epochs + 1)), tag
                assert all(np.isfinite(e.value) for e in events.Scalars(tag)), tag
            assert f"{stage.name}/val/loss/{learner}" in scalars
        for metric in ("pcc_fmri", "pcc_image", "mse_fmri", "ssim_image", "ident_2way_fmri"):
            assert f"{stage.name}/val/{metric}" in scalars
        offset += epochs
    # The loss terms of each learner, e.g. the generator's feature loss and GAN term.
    assert {"stage1/generator/llike", "stage1/generator/gan_generator", "stage2/cognitive_encoder/kl"} <= scalars


def test_tensorboard_has_reconstruction_grids(events: event_accumulator.EventAccumulator) -> None:
    images = set(events.Tags()["images"])
    assert images == {"stage1/val/reconstructions", "stage2/val/reconstructions", "stage3/val/reconstructions",
                      "final/test_reconstructions"}
    grid = events.Images("final/test_reconstructions")[-1]
    assert grid.width > 0 and grid.height > 0 and grid.encoded_image_string.startswith(b"\x89PNG")


def test_a_checkpoint_round_trips_bit_for_bit(trained: Trainer, tmp_path: Path) -> None:
    arrays = trained.checkpoint_arrays()
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(7, arrays, {"note": "round trip"}, 0.25)
    store.wait()
    restored, meta = CheckpointStore(tmp_path / "checkpoints", read_only=True).restore(7, arrays)
    assert_trees_identical(flat_arrays(arrays), flat_arrays(restored))
    assert all(isinstance(restored["states"][name], TrainState) for name in arrays["states"])
    assert meta["note"] == "round trip" and meta["val_score"] == 0.25 and meta["format_version"] == FORMAT_VERSION


def test_the_run_keeps_the_latest_the_best_and_the_last_checkpoint_before_stage_three(trained: Trainer) -> None:
    store = CheckpointStore(trained.paths.checkpoints, read_only=True)
    latest = store.read_meta(store.latest_step())
    assert store.latest_step() == sum(EPOCHS) and latest["stage"] == 3 and latest["epochs_done"] == sum(EPOCHS)
    before_stage_three = sum(EPOCHS[:2])
    assert set(store.steps()) == {store.latest_step(), store.best_step(), before_stage_three}
    assert store.read_meta(before_stage_three)["stage"] == 2
    split = latest["split"]
    assert len(split["fit"]) + len(split["val"]) == N_TRAIN and len(split["test"]) == N_TEST
    assert not set(split["fit"]) & set(split["val"]) and not set(split["fit"] + split["val"]) & set(split["test"])
    assert latest["data"]["fingerprint"] == trained.dataset.fingerprint
    assert config_lib.from_dict(latest["config"]) == trained.config


def test_the_best_checkpoint_is_the_best_of_every_validation(
    trained: Trainer, events: event_accumulator.EventAccumulator
) -> None:
    # Every validation's fMRI-path PCC, as logged, not just those of the checkpoints that survived pruning;
    # stage I's do not count, as it has not trained the fMRI path.
    logged = [(event.value, event.step) for stage in STAGES[1:] for event in events.Scalars(f"{stage.name}/val/pcc_fmri")]
    assert len(logged) == sum(EPOCHS[1:])
    best_value, best_epoch = max(logged)
    store = CheckpointStore(trained.paths.checkpoints, read_only=True)
    assert store.best_step() == best_epoch
    assert store.read_meta(best_epoch)["val_score"] == pytest.approx(best_value, rel=1e-6)


def test_metrics_json_reports_the_best_checkpoint(trained: Trainer) -> None:
    report = json.loads(trained.paths.metrics.read_text())
    store = CheckpointStore(trained.paths.checkpoints, read_only=True)
    assert report["checkpoint_step"] == store.best_step()
    assert report["val"]["pcc_fmri"] == pytest.approx(store.read_meta(store.best_step())["val_score"])
    for split, paths in (("val", ("fmri", "image", "ridge")), ("test", ("fmri", "image"))):
        assert {f"{m}_{p}" for m in ("pcc", "mse", "ssim", "ident_2way") for p in paths} == set(report[split])
    # The ridge row is pixel ridge from every voxel, fitted on the fit trials alone (the test split unread).
    data = trained.data
    ridge = RidgeDecoder().fit(data.fit.voxels, data.fit.images).predict(data.val.voxels)
    assert report["val"]["pcc_ridge"] == pytest.approx(metrics.pcc(data.val.images, ridge).mean(), rel=1e-6)


@pytest.mark.parametrize("fmri, ridge, leads", [
    ((0.80, 0.030, 0.70), (0.78, 0.039, 0.50), []),
    ((0.68, 0.067, 0.19), (0.78, 0.039, 0.50), ["PCC 0.6800 < 0.7800", "MSE 0.0670 > 0.0390", "SSIM 0.1900 < 0.5000"]),
    ((0.80, 0.040, 0.70), (0.78, 0.039, 0.50), ["MSE 0.0400 > 0.0390"]),
])
def test_the_measures_on_which_ridge_leads_are_named_with_both_figures(
    fmri: tuple[float, ...], ridge: tuple[float, ...], leads: list[str]
) -> None:
    scores = {**{f"{m}_fmri": v for m, v in zip(("pcc", "mse", "ssim"), fmri)},
              **{f"{m}_ridge": v for m, v in zip(("pcc", "mse", "ssim"), ridge)}}
    assert measures_ridge_leads(scores) == leads


def test_validation_csv_holds_every_validation_and_metrics_json_sums_it_up_per_stage(
    trained: Trainer, events: event_accumulator.EventAccumulator
) -> None:
    rows = history.read(trained.paths.validation)
    assert [row["step"] for row in rows] == list(range(1, sum(EPOCHS) + 1))
    for stage, epochs in zip(STAGES, EPOCHS):
        ours = [row for row in rows if row["stage"] == stage.number]
        assert [row["epoch"] for row in ours] == list(range(1, epochs + 1))
        for metric in ("pcc_fmri", "ssim_image"):
            logged = [(event.step, event.value) for event in events.Scalars(f"{stage.name}/val/{metric}")]
            assert [(row["step"], pytest.approx(row[metric], rel=1e-6)) for row in ours] == logged
    summary = json.loads(trained.paths.metrics.read_text())["validation"]
    assert set(summary) == {"stage1", "stage2", "stage3"}
    assert "best" not in summary["stage1"] and not any(k.endswith("_fmri") for k in summary["stage1"]["last"])
    assert summary["stage1"]["last"]["pcc_image"] == rows[EPOCHS[0] - 1]["pcc_image"]
    for stage in STAGES[1:]:
        ours = [row for row in rows if row["stage"] == stage.number]
        assert summary[stage.name] == {"last": ours[-1], "best": max(ours, key=lambda row: row["pcc_fmri"])}
    # The best checkpoint is the best of the paired stages' bests.
    store = CheckpointStore(trained.paths.checkpoints, read_only=True)
    best = max((summary[stage.name]["best"] for stage in STAGES[1:]), key=lambda row: row["pcc_fmri"])
    assert best["step"] == store.best_step() and best["pcc_fmri"] == store.read_meta(best["step"])["val_score"]


def test_checkpoints_and_validations_follow_their_own_schedules(tiny_config: Config, dataset: Dataset,
                                                               tmp_path: Path) -> None:
    config = config_lib.override(tiny_config, ["train.epochs=0,3,0", "train.eval_every=2", "train.checkpoint_every=1"])
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    lines: list[str] = []
    Trainer(config, dataset, paths, progress=False, log=lines.append).train()
    saved = [line for line in lines if line.startswith("stage2 epoch")]
    # A checkpoint every epoch; a validation every second epoch and after the last.
    assert [line.split(":")[0] for line in saved] == ["stage2 epoch 1/3", "stage2 epoch 2/3", "stage2 epoch 3/3"]
    assert ["val PCC" in line for line in saved] == [False, True, True]


def test_a_validation_is_saved_only_when_it_is_a_new_best(tiny_config: Config, dataset: Dataset, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_lib.override(tiny_config, ["train.epochs=0,5,0", "train.eval_every=1", "train.checkpoint_every=4"])
    scores = iter([0.2, 0.1, 0.3, 0.28, 0.25])
    monkeypatch.setattr(Trainer, "validate", lambda self, stage, writer: next(scores))
    saved: list[tuple[int, float | None]] = []
    save = CheckpointStore.save

    def recording_save(store: CheckpointStore, step: int, arrays, meta, val_score: float | None) -> None:
        saved.append((step, val_score))
        save(store, step, arrays, meta, val_score)

    monkeypatch.setattr(CheckpointStore, "save", recording_save)
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    report = Trainer(config, dataset, paths, progress=False, log=lambda line: None).train()
    # New bests (epochs 1 and 3), the checkpoint schedule (4) and the stage's end (5); epoch 2 fell back.
    assert saved == [(1, 0.2), (3, 0.3), (4, 0.28), (5, 0.25)]
    assert report["checkpoint_step"] == 3


def _stage_two_run(config: Config, dataset: Dataset, root: Path, interrupt: threading.Event | None = None) -> Trainer:
    paths = RunPaths(root)
    paths.root.mkdir(exist_ok=True)
    trainer = Trainer(config, dataset, paths, interrupt=interrupt, progress=False, log=lambda line: None)
    if interrupt is None:
        trainer.resume()
    trainer.train()
    return trainer


def test_epochs_that_hand_their_states_on_train_exactly_what_epochs_one_at_a_time_train(
    tiny_config: Config, dataset: Dataset, tmp_path: Path
) -> None:
    one_at_a_time = config_lib.override(tiny_config, ["train.epochs=0,4,0", "train.eval_every=1", "train.checkpoint_every=1"])
    handed_on = config_lib.override(one_at_a_time, ["train.eval_every=4", "train.checkpoint_every=4"])
    reference = _stage_two_run(one_at_a_time, dataset, tmp_path / "reference")
    _stage_two_run(handed_on, dataset, tmp_path / "handed-on")
    # Epochs 1-3 of the second run never came back to the host between them; the weights are the same bits.
    assert CheckpointStore(tmp_path / "handed-on" / "checkpoints", read_only=True).steps() == [4]
    template = reference.checkpoint_arrays()
    assert_trees_identical(checkpoint_arrays(tmp_path / "reference", template, 4),
                           checkpoint_arrays(tmp_path / "handed-on", template, 4))


def test_a_signal_during_an_epoch_handed_on_stops_after_the_next_with_a_checkpoint(
    tiny_config: Config, dataset: Dataset, tmp_path: Path
) -> None:
    config = config_lib.override(tiny_config, ["train.epochs=0,4,0", "train.eval_every=4", "train.checkpoint_every=4"])
    interrupt = threading.Event()
    interrupt.set()
    with pytest.raises(Interrupted, match="saved checkpoint 2"):
        _stage_two_run(config, dataset, tmp_path / "run", interrupt)
    # Epoch 1's states had gone on to epoch 2, so the run stopped after epoch 2 and saved it; resumed, it
    # ends where an uninterrupted run ends.
    resumed = _stage_two_run(config, dataset, tmp_path / "run")
    _stage_two_run(config, dataset, tmp_path / "uninterrupted")
    template = resumed.checkpoint_arrays()
    assert_trees_identical(checkpoint_arrays(tmp_path / "run", template, 4),
                           checkpoint_arrays(tmp_path / "uninterrupted", template, 4))


def test_train_py_writes_a_complete_run_folder(train_py_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, done = train_py_run
    paths = RunPaths(out)
    assert CheckpointStore(paths.checkpoints, read_only=True).latest_step() == sum(EPOCHS)
    saved = config_lib.from_dict(json.loads(paths.config.read_text()))
    assert saved.preset == "tiny" and saved.train.epochs == EPOCHS and not saved.train.use_extra_images
    assert json.loads(paths.run_info.read_text())["command"][0] == "train.py"
    assert set(json.loads(paths.metrics.read_text())) >= {"checkpoint_step", "val", "test"}
    with Image.open(paths.grid) as grid:
        assert grid.format == "PNG" and grid.size[0] > 0
    assert list(paths.tensorboard.iterdir())
    assert f"run folder   {out}" in done.stdout
    assert len(history.read(paths.validation)) == sum(EPOCHS) and "fMRI best (epoch)" in done.stdout
    timing = json.loads(paths.run_info.read_text())["timing"]
    assert [timing[f"stage{n}"]["epochs"] for n in (1, 2, 3)] == list(EPOCHS)
    assert all(part["seconds"] > 0 for part in timing.values()) and "final_report" in timing
    assert f"stage1 {EPOCHS[0]} epochs" in done.stdout and "final report" in done.stdout
    # The validation ridge row is printed, and the warning appears exactly when ridge leads on some measure.
    val = json.loads(paths.metrics.read_text())["val"]
    assert "val    ridge " in done.stdout
    assert ("warning: on the validation trials the fMRI path trails ridge" in done.stdout) == bool(measures_ridge_leads(val))
    # Nothing temporary is left behind.
    assert not [p for p in out.rglob("*") if "tmp" in p.name]
