"""A run's checkpoints: what one holds (the contract), and the orbax store that saves, keeps and restores them.

Each checkpoint holds two items: `state`, the arrays of `checkpoint_tree` (every member's train states, the
voxel scaler, the members' RNG keys), and `meta`, the JSON of `CheckpointMeta` (stage, epoch, config, the
training data's record, the split) plus the format version and validation score the store adds. The latest
checkpoint and the best by validation score are kept, and the steps a run asks to keep (the stage-I snapshots
it may make members of, the last checkpoint before stage III).

A checkpoint is written into a temporary folder and renamed into place when complete; an old one is
renamed into `pruned/` and deleted from there. Either way a process killed at any moment leaves every
step folder whole, and the next store opened on the folder removes the leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from orbax.checkpoint import checkpoint_managers

import vaegan_jax
from vaegan_jax import config as config_lib
from vaegan_jax import rng
from vaegan_jax.config import Config, member_count
from vaegan_jax.data.dataset import Dataset, VoxelScaler
from vaegan_jax.data.origin import DataOrigin
from vaegan_jax.data.prepare import PreparedData, selection_size
from vaegan_jax.errors import CheckpointError, ConfigError, summary
from vaegan_jax.sharding import MEMBERS, fetch, training_mesh
from vaegan_jax.steps import States, create_members

# 3: the metadata records the training data's origin as fields (data.origin: file, synthetic_seed). Format 2,
# the same arrays without those fields, is still read: its origin is the file its source names, if any.
# 4: the train states of networks whose weights stage I averages (train.weight_average) hold the averages;
# formats 2 and 3 predate averaging, so their arrays are those of a run without it.
FORMAT_VERSION = 4
READABLE_FORMATS = (2, 3, 4)
NO_SCORE = -1.0
PRUNED = "pruned"


@dataclasses.dataclass(frozen=True)
class DataRecord:
    """What a checkpoint records of its training data: enough to recognise it, and to load it again."""

    name: str
    source: str
    fingerprint: str
    n_voxels: int
    image_size: int
    origin: DataOrigin

    @classmethod
    def of(cls, dataset: Dataset, origin: DataOrigin) -> DataRecord:
        """The record of `dataset`, loaded from `origin`."""
        return cls(dataset.name, dataset.source, dataset.fingerprint, dataset.n_voxels, dataset.image_size, origin)


@dataclasses.dataclass(frozen=True)
class Split:
    """The trials of each split (indices into the source file) and the voxels the cognitive encoder reads."""

    fit: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    voxels: tuple[int, ...]

    @classmethod
    def of(cls, data: PreparedData) -> Split:
        """The split of prepared data."""
        return cls(*(tuple(int(i) for i in a) for a in (data.fit.indices, data.val.indices, data.test.indices,
                                                         data.voxel_selection)))


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """The JSON half of a checkpoint. `val_score` is the store's to set: None until saved, or when not validated."""

    stage: int
    epoch_in_stage: int
    epochs_done: int
    config: Config
    data: DataRecord
    split: Split
    code_version: str = vaegan_jax.__version__
    val_score: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The document the store saves (it adds the format version and the validation score)."""
        return {
            "stage": self.stage, "epoch_in_stage": self.epoch_in_stage, "epochs_done": self.epochs_done,
            "config": config_lib.to_dict(self.config),
            "data": dataclasses.asdict(self.data),
            "split": {name: list(indices) for name, indices in dataclasses.asdict(self.split).items()},
            "vaegan_jax": self.code_version,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any], where: Path) -> CheckpointMeta:
        """The metadata of the checkpoint at `where`, with a one-line CheckpointError for what is missing or invalid."""
        for key in ("config", "data", "split"):
            if not isinstance(document.get(key), dict):
                raise CheckpointError(f"{where}: the checkpoint records no {key}")
        try:
            config = config_lib.from_dict(document["config"])
            config_lib.validate(config)
        except (ConfigError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{where}: the checkpoint's config is not valid ({err})") from None
        try:
            data = document["data"]
            origin = DataOrigin.from_json(data["origin"]) if "origin" in data else DataOrigin.of_source(data["source"])
            record = DataRecord(**{**data, "origin": origin})
            split = Split(**{name: tuple(indices) for name, indices in document["split"].items()})
            score = document.get("val_score", NO_SCORE)
            return cls(
                document["stage"], document["epoch_in_stage"], document["epochs_done"], config, record, split,
                document["vaegan_jax"], None if score == NO_SCORE else score,
            )
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{where}: incomplete checkpoint metadata ({summary(err)})") from None


@dataclasses.dataclass(frozen=True)
class CheckpointArrays:
    """The arrays of a checkpoint, restored: every member's train states, the voxel scaler, the members' keys."""

    states: States
    scaler: VoxelScaler
    keys: jax.Array


def checkpoint_tree(states: Any, voxel_mean: jax.Array, voxel_std: jax.Array, keys: jax.Array) -> dict[str, Any]:
    """The arrays a checkpoint holds, in the one layout every save and restore uses."""
    return {"states": states, "scaler": {"mean": voxel_mean, "std": voxel_std}, "rng": jax.random.key_data(keys)}


def abstract_tree(config: Config, n_voxels: int, mesh: Mesh, stage: int = 3) -> dict[str, Any]:
    """Shapes, dtypes and shardings on `mesh` of the `checkpoint_tree` of a run of `config` on `n_voxels` voxels,
    taken in `stage` (stage I's have no snapshot members yet).

    The tree both training and evaluation restore into: nothing is initialised, and each process's part of
    every array lands on its own devices (the members split across the mesh, the scaler on every device).
    """
    keys = rng.member_keys(config, stage)
    voxels = jnp.zeros(n_voxels, jnp.float32)
    n_inputs = selection_size(n_voxels, config.train.selected_voxels)
    shapes = jax.eval_shape(lambda: checkpoint_tree(create_members(config, n_inputs, keys), voxels, voxels, keys))
    members, shared = NamedSharding(mesh, PartitionSpec(MEMBERS)), NamedSharding(mesh, PartitionSpec())

    def placed(name: str, tree: Any) -> Any:
        sharding = shared if name == "scaler" else members
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)

    return {name: placed(name, tree) for name, tree in shapes.items()}


def unpack(tree: dict[str, Any]) -> CheckpointArrays:
    """The restored `checkpoint_tree` as typed parts (the scaler fetched to this process, the keys typed again)."""
    scaler = fetch(tree["scaler"])
    return CheckpointArrays(tree["states"], VoxelScaler(np.asarray(scaler["mean"]), np.asarray(scaler["std"])),
                            jax.random.wrap_key_data(tree["rng"]))


def _abstract(tree: Any) -> Any:
    """Shape/dtype/sharding of every array of `tree`, so a restore lands where the template's arrays live
    (this machine's first device for arrays not yet placed)."""
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is not None:
            return x
        sharding = x.sharding if isinstance(x, jax.Array) and x.committed else default
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(leaf, tree)


class CheckpointStore:
    """A run's checkpoint folder: save, list, validate and restore."""

    def __init__(self, directory: str | os.PathLike, read_only: bool = False, keep: tuple[int, ...] = ()) -> None:
        """Open (or create) the folder; besides the latest and the best checkpoint it keeps the steps in `keep`."""
        self.directory = Path(directory).absolute()
        self.read_only = read_only
        policy = checkpoint_managers.AnyPreservationPolicy(
            [
                checkpoint_managers.LatestN(n=1),
                checkpoint_managers.BestN(get_metric_fn=_val_score, n=1),
                checkpoint_managers.CustomSteps(steps=list(keep)),
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
        """Save arrays and metadata as checkpoint `step` (asynchronously; `wait` finishes it). A NaN score (the PCC of a
        blank reconstruction) is kept as none, so that no comparison with it decides the best checkpoint."""
        unscored = val_score is None or math.isnan(val_score)
        meta = {**meta, "format_version": FORMAT_VERSION, "val_score": NO_SCORE if unscored else val_score}
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
        if meta["format_version"] not in READABLE_FORMATS:
            raise CheckpointError(
                f"{self.directory}/{step}: checkpoint format {meta['format_version']} was written by another "
                f"version of vaegan_jax; this one reads formats {', '.join(map(str, READABLE_FORMATS))}"
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


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint: its run folder, its own folder, how it was chosen, its metadata and arrays, and
    the mesh its arrays lie on."""

    run: Path
    path: Path
    step: int
    selected_by: str
    meta: CheckpointMeta
    arrays: CheckpointArrays
    mesh: Mesh


def locate_checkpoint(path: str | os.PathLike, step: int | None) -> tuple[Path, Path, int | None, str]:
    """Run folder, checkpoints folder, step (None: the best) and how it was chosen, from any of the three paths."""
    path = Path(path).absolute()
    if not path.is_dir():
        what = "not a folder" if path.exists() else "does not exist"
        raise CheckpointError(f"{path}: {what}; expected a run folder, its checkpoints/ or a checkpoints/<step>")
    if (path / "checkpoints").is_dir():
        return path, path / "checkpoints", step, "best validation score" if step is None else "--step"
    if path.name.isdigit():
        if step is not None and step != int(path.name):
            raise ConfigError(f"--step {step} contradicts --ckpt {path} (checkpoint {path.name})")
        return path.parent.parent, path.parent, int(path.name), "checkpoint folder"
    return path.parent, path, step, "best validation score" if step is None else "--step"


def load_checkpoint(path: str | os.PathLike, step: int | None = None) -> Checkpoint:
    """Restore a checkpoint of a run (the best by validation score unless `step` or a step folder names one)."""
    run, directory, step, selected_by = locate_checkpoint(path, step)
    # Orbax warns that a read-only manager is read-only, on every open.
    with _absl_level(logging.ERROR):
        store = CheckpointStore(directory, read_only=True)
    try:
        steps = store.steps()
        if not steps:
            raise CheckpointError(f"{directory}: no checkpoints")
        if step is None:
            step = store.best_step()
        elif step not in steps:
            raise CheckpointError(f"{directory}: no complete checkpoint {step}; available: {', '.join(map(str, steps))}")
        where = directory / str(step)
        meta = CheckpointMeta.from_json(store.read_meta(step), where)
        mesh = training_mesh(member_count(meta.config, meta.stage), meta.config.train.batch_size)
        tree, _ = store.restore(step, abstract_tree(meta.config, meta.data.n_voxels, mesh, meta.stage))
    finally:
        store.close()
    return Checkpoint(run, where, step, selected_by, meta, unpack(tree), mesh)


def checkpoint_stages(path: str | os.PathLike) -> tuple[int | None, dict[int, int]]:
    """A run's best checkpoint step (None if it has none) and the stage of each of its complete checkpoints."""
    _, directory, _, _ = locate_checkpoint(path, None)
    with _absl_level(logging.ERROR):
        store = CheckpointStore(directory, read_only=True)
    try:
        return store.best_step(), {step: int(store.read_meta(step)["stage"]) for step in store.steps()}
    finally:
        store.close()


@contextlib.contextmanager
def _absl_level(level: int) -> Iterator[None]:
    logger = logging.getLogger("absl")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _val_score(metrics: dict[str, float]) -> float:
    return metrics["val_score"]


class _FinishingEventLoop(asyncio.SelectorEventLoop):
    """An event loop that lets its unfinished tasks end before it closes.

    Orbax reads a checkpoint's arrays concurrently in a loop of its own; when one read fails (a damaged
    file), it closes that loop with the other reads still under way, and when they complete, their
    callbacks find the loop closed: Python reports "Event loop is closed" tracebacks, at exit at the latest.
    """

    def close(self) -> None:
        """Let unfinished tasks end (for at most a minute), then close."""
        pending = [task for task in asyncio.all_tasks(self) if not task.done()]
        if pending and not self.is_running() and not self.is_closed():
            # Reads of a local folder end in moments; the bound only keeps a stuck one from hanging the run.
            self.run_until_complete(asyncio.wait(pending, timeout=60))
        super().close()


class _FinishingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """A loop that lets its unfinished tasks end before it closes."""
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
