"""The validation history: its rows, what a resume forgets and each stage's summary."""

from __future__ import annotations

import math
from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator

from vaegan_jax import history
from vaegan_jax.writer import RunWriter, silent


def _row(step: int, stage: int, epoch: int, pcc_fmri: float) -> dict[str, float]:
    return {"step": step, "stage": stage, "epoch": epoch, "pcc_fmri": pcc_fmri, "pcc_image": 0.5 + step / 100}


ROWS = [_row(1, 1, 1, 0.1), _row(2, 1, 2, 0.2), _row(3, 2, 1, 0.7), _row(4, 2, 2, 0.9), _row(5, 2, 3, 0.8),
        _row(6, 3, 1, 0.85), _row(7, 3, 2, 0.85)]


def _written(path: Path) -> Path:
    for row in ROWS:
        history.append(path, row)
    return path


def test_rows_read_back_exactly_with_one_header(tmp_path: Path) -> None:
    path = _written(tmp_path / "validation.csv")
    assert history.read(path) == ROWS
    assert path.read_text().splitlines()[0] == "step,stage,epoch,pcc_fmri,pcc_image"
    assert history.read(tmp_path / "missing.csv") == []


def test_a_resume_forgets_the_validations_after_its_checkpoint(tmp_path: Path) -> None:
    path = _written(tmp_path / "validation.csv")
    history.forget_after(path, 4)
    assert history.read(path) == ROWS[:4]
    history.forget_after(path, 0)
    assert history.read(path) == []


def test_each_stage_reports_its_last_and_its_first_best_fmri_validation(tmp_path: Path) -> None:
    summary = history.stage_summary(ROWS)
    assert summary["stage1"] == {"last": {"step": 2, "stage": 1, "epoch": 2, "pcc_image": 0.52}}
    assert summary["stage2"] == {"last": ROWS[4], "best": ROWS[3]}
    assert summary["stage3"] == {"last": ROWS[6], "best": ROWS[5]}
    table = history.describe(summary)
    assert len(table) == 4 and "0.9000 (2)" in table[2] and table[1].split()[1:3] == ["-", "-"]


def test_a_row_cut_short_by_a_kill_is_not_read_and_a_resume_drops_it(tmp_path: Path) -> None:
    path = _written(tmp_path / "validation.csv")
    with path.open("a") as file:
        file.write("8,3,3,0.8")
    assert history.read(path) == ROWS
    history.forget_after(path, 7)
    history.append(path, _row(8, 3, 3, 0.9))
    assert history.read(path) == [*ROWS, _row(8, 3, 3, 0.9)]
    assert [p.name for p in tmp_path.iterdir()] == ["validation.csv"]


def test_a_header_cut_short_by_a_kill_starts_the_file_again_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "validation.csv"
    path.write_text("step,sta")
    history.forget_after(path, 3)
    history.append(path, ROWS[0])
    assert history.read(path) == ROWS[:1]


def test_tensorboard_gets_the_finite_scores_and_the_history_every_one(tmp_path: Path) -> None:
    # 2-way identification of a lone validation trial is NaN: no point on a curve, a NaN in the history.
    scores = {"pcc_fmri": 0.5, "ident_2way_fmri": math.nan}
    with RunWriter(tmp_path / "tensorboard", tmp_path / "validation.csv", progress=False, log=silent) as writer:
        writer.scalars(scores, 3, "stage2/val")
        writer.validation({"step": 3, "stage": 2, "epoch": 1, **scores})
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert events.Tags()["scalars"] == ["stage2/val/pcc_fmri"]
    assert math.isnan(history.read(tmp_path / "validation.csv")[0]["ident_2way_fmri"])
