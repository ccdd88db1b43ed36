"""Everything a training run reports as it goes: TensorBoard scalars and images, the validation history, progress
bars and log lines.

One object, like clu's `create_default_writer`: every process of a multi-process run calls it alike, and
only process 0 writes event files, draws progress bars or prints.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

from vaegan_jax import history
from vaegan_jax.sharding import is_main_process


def silent(message: str) -> None:
    """A log that drops every message (the processes that do not report)."""


def to_stderr(message: str) -> None:
    """A log that prints each message on stderr: where the library's warnings go unless the caller says otherwise."""
    print(message, file=sys.stderr)


def main_process_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` on process 0; `silent` on the others."""
    return log if is_main_process() else silent


class RunWriter:
    """A run's TensorBoard log, validation history, progress bars (when `progress`) and log lines, written by
    process 0 alone."""

    def __init__(self, folder: Path, history_file: Path, progress: bool, log: Callable[[str], None]) -> None:
        self._events = SummaryWriter(str(folder), write_to_disk=is_main_process())
        self._history_file = history_file
        self.progress = progress and is_main_process()
        self.log = main_process_log(log)

    def scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        """Log each finite value under the tag `prefix/name` (NaN, e.g. 2-way identification of a lone validation
        trial, has no point on a curve)."""
        for name, value in values.items():
            if np.isfinite(value):
                self._events.add_scalar(f"{prefix}/{name}", value, step)

    def validation(self, row: dict[str, float]) -> None:
        """Add a validation's row to the run's history (history.py)."""
        if is_main_process():
            history.append(self._history_file, row)

    def image(self, tag: str, grid: np.ndarray, step: int) -> None:
        """Log a (H, W) grey image."""
        self._events.add_image(tag, grid[..., None], step, dataformats="HWC")

    def bar(self, start: int, total: int, description: str) -> tqdm:
        """A progress bar over epochs start..total-1 (drawn only when this writer shows progress)."""
        return tqdm(range(start, total), desc=description, initial=start, total=total,
                    disable=not self.progress, leave=True, dynamic_ncols=True)

    def flush(self) -> None:
        """Put what was logged on disk."""
        self._events.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._events.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
