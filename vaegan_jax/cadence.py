"""When the training loop validates and saves: small predicates of the epoch count, like big_vision's `itstime`.

Epochs count from 1 within a stage; `total` is the stage's epoch count; `stopping` says the run stops after
this epoch (a signal), which always validates and saves so that a resumed run loses nothing.
"""

from __future__ import annotations

import math


def every(epoch: int, period: int) -> bool:
    """Whether `epoch` is a multiple of `period`."""
    return epoch % period == 0


def validate_now(epoch: int, total: int, period: int, stopping: bool) -> bool:
    """Validate every `period` epochs, after the stage's last and before stopping."""
    return every(epoch, period) or epoch == total or stopping


def improves(score: float | None, best: float | None) -> bool:
    """Whether a validation score beats the best so far (None: no score, or none yet; NaN, the PCC of a blank
    reconstruction, never does)."""
    return score is not None and not math.isnan(score) and (best is None or score > best)


def save_now(epoch: int, total: int, period: int, improved: bool, stopping: bool) -> bool:
    """Save on a new best, every `period` epochs, after the stage's last and before stopping.

    A validation that is no new best needs no checkpoint: saving the paper preset's 0.5 GB took about 1.2 s,
    several epochs' worth of GPU steps.
    """
    return improved or every(epoch, period) or epoch == total or stopping


def hands_on(epoch: int, total: int, validate_period: int, save_period: int) -> bool:
    """Whether an epoch's states can go straight on to the next epoch: the schedule neither validates nor saves
    after it (an epoch may still be the one a signal stops at; the loop then stops after the next)."""
    return epoch < total and not every(epoch, validate_period) and not every(epoch, save_period)


def stage_offsets(epochs: tuple[int, ...]) -> list[int]:
    """Epochs before each stage starts, for stages of `epochs` epochs (checkpoint steps count epochs across stages)."""
    return [sum(epochs[:k]) for k in range(len(epochs))]
