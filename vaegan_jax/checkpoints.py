"""Orbax checkpoints of a run: every train state, the voxel scaler and RNG, plus JSON metadata.

Each checkpoint holds two items: `state` (a pytree of arrays, restored onto the current device) and
`meta` (JSON: format version, stage, epoch, config, data fingerprint, validation score). The latest
checkpoint and the best by validation score are kept.

A checkpoint is written into a temporary folder and renamed into place when complete; an old one is
renamed into `pruned/` and deleted from there. Either way a process killed at any moment leaves every
step folder whole, and the next store opened on the folder removes the leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from vaegan_jax.errors import CheckpointError, summary

# 2: train states carry a leading ensemble-member axis, the RNG one key per member.
FORMAT_VERSION = 2
NO_SCORE = -1.0
PRUNED = "pruned"


def checkpoint_tree(states: Any, voxel_mean: jax.Array, voxel_std: jax.Array, keys: jax.Array) -> dict[str, Any]:
    """The arrays a checkpoint holds: every member's train states, the voxel scaler and the members' RNG keys."""
    return {"states": states, "scaler": {"mean": voxel_mean, "std": voxel_std}, "rng": jax.random.key_data(keys)}


def _abstract(tree: Any) -> Any:
    """Shape/dtype/sharding of every array of `tree`, so a restore lands where the template's arrays live
    (this machine's first device for arrays not yet placed)."""
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def leaf(x):
        sharding = x.sharding if isinstance(x, jax.Array) and x.committed else default
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(leaf, tree)


class CheckpointStore:
    """A run's checkpoint folder: save, list, validate and restore."""

    def __init__(self, directory: str | os.PathLike, read_only: bool = False) -> None:
        self.directory = Path(directory).absolute()
        self.read_only = read_only
        policy = checkpoint_managers.AnyPreservationPolicy(
            [
                checkpoint_managers.LatestN(n=1),
                checkpoint_managers.BestN(get_metric_fn=_val_score, n=1),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            # Only with best_fn does orbax write the scores to disk; without them a reopened (resumed) run
            # would never prune the checkpoints it started with.
            best_fn=_val_score,
            todelete_subdir=PRUNED,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
        )
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{self.directory}: cannot open checkpoint folder ({err})") from None
        self._purge_pruned()

    def save(self, step: int, arrays: Any, meta: dict[str, Any], val_score: float | None) -> None:
        """Save arrays and metadata as checkpoint `step` (asynchronously; `wait` finishes it)."""
        meta = {**meta, "format_version": FORMAT_VERSION, "val_score": NO_SCORE if val_score is None else val_score}
        self.wait()
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
                metrics={"val_score": meta["val_score"]},
                force=True,
            )
        except Exception as err:  # a full disk surfaces as OSError or as orbax's wrapping of it
            raise self._write_error(err) from None

    def wait(self) -> None:
        """Block until pending saves are on disk and the checkpoints they replace are deleted."""
        try:
            self._manager.wait_until_finished()
        except Exception as err:  # the background save's failure is re-raised here
            raise self._write_error(err) from None
        self._purge_pruned()

    def _write_error(self, err: Exception) -> CheckpointError:
        """A one-line error for a save that failed; the checkpoints committed before it stay usable."""
        kept = self.steps()
        return CheckpointError(
            f"{self.directory}: cannot write checkpoint ({summary(err)}); "
            + (f"the last complete one is {self.directory / str(kept[-1])}" if kept else "no complete checkpoint")
        )

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.wait()
        self._manager.close()

    def _purge_pruned(self) -> None:
        """Delete the checkpoints orbax moved aside (a kill during an earlier purge left some behind)."""
        pruned = self.directory / PRUNED
        if not self.read_only and pruned.is_dir():
            for old in pruned.iterdir():
                shutil.rmtree(old, ignore_errors=True)

    def steps(self) -> list[int]:
        """Completed checkpoint steps, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest completed checkpoint, or None."""
        return self._manager.latest_step()

    def _scored_steps(self) -> list[tuple[float, int]]:
        """(validation score, step) of every completed checkpoint, oldest first; NO_SCORE where none."""
        return [(self.read_meta(s).get("val_score", NO_SCORE), s) for s in self.steps()]

    def best_step(self) -> int | None:
        """The checkpoint with the highest validation score, or the latest if none has a score."""
        scored = self._scored_steps()
        if not scored:
            return None
        best_score, best = max(scored)
        return best if best_score > NO_SCORE else scored[-1][1]

    def best_score(self) -> float | None:
        """The highest validation score among the completed checkpoints, or None if none has one."""
        return max((score for score, _ in self._scored_steps() if score > NO_SCORE), default=None)

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata of checkpoint `step`, validated for this code's format."""
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:  # orbax raises many types for a damaged folder
            raise CheckpointError(f"{self.directory}/{step}: unreadable checkpoint metadata ({summary(err)})") from None
        if not isinstance(meta, dict) or "format_version" not in meta:
            raise CheckpointError(f"{self.directory}/{step}: not a vaegan_jax checkpoint (no format version)")
        if meta["format_version"] != FORMAT_VERSION:
            raise CheckpointError(
                f"{self.directory}/{step}: checkpoint format {meta['format_version']} was written by another "
                f"version of vaegan_jax; this one reads format {FORMAT_VERSION}"
            )
        return meta

    def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
        """Arrays shaped like `template` (on this machine's device) and the metadata of checkpoint `step`."""
        meta = self.read_meta(step)
        try:
            with _event_loops_that_finish_their_tasks():
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(template)))
                )
        except Exception as err:  # orbax raises many types for a damaged or mismatched folder
            raise CheckpointError(f"{self.directory}/{step}: cannot restore checkpoint ({summary(err)})") from None
        return restored["state"], meta


def _val_score(metrics: dict[str, float]) -> float:
    return metrics["val_score"]


class _FinishingEventLoop(asyncio.SelectorEventLoop):
    """An event loop that lets its unfinished tasks end before it closes.

    Orbax reads a checkpoint's arrays concurrently in a loop of its own; when one read fails (a damaged
    file), it closes that loop with the other reads still under way, and when they complete, their
    callbacks find the loop closed: Python reports "Event loop is closed" tracebacks, at exit at the latest.
    """

    def close(self) -> None:
        pending = [task for task in asyncio.all_tasks(self) if not task.done()]
        if pending and not self.is_running() and not self.is_closed():
            # Reads of a local folder end in moments; the bound only keeps a stuck one from hanging the run.
            self.run_until_complete(asyncio.wait(pending, timeout=60))
        super().close()


class _FinishingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _FinishingEventLoop()


@contextlib.contextmanager
def _event_loops_that_finish_their_tasks() -> Iterator[None]:
    """While inside, new asyncio event loops (orbax makes one per restore) finish their tasks before closing."""
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_FinishingPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)
