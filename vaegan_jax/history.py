"""A run's validation history, validation.csv: one row per validation, and each stage's summary of it.

TensorBoard holds the same figures as curves; this file is for reading them without it (and for sending them on).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

LEADING_FIELDS = ("step", "stage", "epoch")


def append(path: Path, row: dict[str, float]) -> None:
    """Add a validation's row (`LEADING_FIELDS`, then its scores), writing the header first in a new file."""
    _write(path, [row], "a")


def _write(path: Path, rows: list[dict[str, Any]], mode: str) -> None:
    new = mode == "w" or not path.exists()
    with path.open(mode, newline="") as file:
        writer = csv.DictWriter(file, [*LEADING_FIELDS, *(key for key in rows[0] if key not in LEADING_FIELDS)])
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read(path: Path) -> list[dict[str, Any]]:
    """The rows written so far (none for a missing file); steps, stages and epochs as ints, scores as floats.
    A last line without its newline, cut short by a kill, is not a row."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [{key: int(value) if key in LEADING_FIELDS else float(value) for key, value in row.items()}
            for row in csv.DictReader(io.StringIO(complete, newline=""))]


def forget_after(path: Path, step: int) -> None:
    """Drop the rows of validations after checkpoint `step`, whose states a resume or a rollback discards (and a
    row cut short by a kill), replacing the file in one move."""
    if not path.exists():
        return
    kept = [row for row in read(path) if row["step"] <= step]
    if not kept:
        path.unlink()
        return
    partial = path.with_name(path.name + ".partial")
    _write(partial, kept, "w")
    os.replace(partial, path)


def stage_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per stage that validated, its last validation's row and, for the stages that train the fMRI path, the row
    of its best fMRI-path PCC; stage I's rows keep only the image path's scores, its fMRI path being untrained."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for stage in sorted({row["stage"] for row in rows}):
        ours = [row for row in rows if row["stage"] == stage]
        if stage == 1:
            ours = [{k: v for k, v in row.items() if not k.endswith("_fmri")} for row in ours]
        summary[f"stage{stage}"] = {"last": ours[-1]}
        if stage > 1:
            summary[f"stage{stage}"]["best"] = max(ours, key=lambda row: row["pcc_fmri"])
    return summary


def describe(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """`stage_summary` as a small table: per stage, the fMRI path's best and last validation PCC, the image path's last."""
    lines = [f"{'val PCC':9} {'fMRI best (epoch)':>18} {'fMRI last':>10} {'image last':>11}"]
    for name, rows in summary.items():
        best = rows.get("best")
        best_text = "-" if best is None else f"{best['pcc_fmri']:.4f} ({best['epoch']})"
        last_fmri = rows["last"].get("pcc_fmri")
        lines.append(f"{name:9} {best_text:>18} {'-' if last_fmri is None else f'{last_fmri:.4f}':>10} "
                     f"{rows['last']['pcc_image']:11.4f}")
    return lines
