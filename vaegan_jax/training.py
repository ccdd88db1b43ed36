"""The three-stage training loop: run folder, data on the device, one compiled call per epoch,
validation, TensorBoard, checkpoints, resumption, interruption and divergence handling."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

import vaegan_jax
from vaegan_jax import choices
from vaegan_jax import config as config_lib
from vaegan_jax import metrics as metrics_lib
from vaegan_jax.checkpoints import CheckpointStore, checkpoint_tree
from vaegan_jax.config import Config
from vaegan_jax.data.dataset import Dataset, Trials
from vaegan_jax.data.prepare import PreparedData, prepare, select_voxels, to_model_images, to_native_images
from vaegan_jax.errors import CheckpointError, ConfigError, VaeganError
from vaegan_jax.images import labelled_grid, save_png
from vaegan_jax.initialisation import ridge_initialised_cognitive_encoder
from vaegan_jax.sharding import (
    any_process, barrier, describe, fetch, is_main_process, place_members, replicate, training_mesh,
)
from vaegan_jax.steps import (
    STAGES, EpochRunner, Stage, States, create_members, make_eval_losses, make_reconstruct, member_keys,
    stack_members, take_member,
)

SUMMARY_METRICS = ("pcc", "mse", "ssim", "ident_2way")
RECORDED_PACKAGES = (
    "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "scikit-image", "tensorboardX",
)


class Interrupted(VaeganError):
    """Training stopped on a signal after saving a checkpoint."""


class Diverged(VaeganError):
    """A loss or parameter became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where a run keeps its files."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def run_info(self) -> Path:
        return self.root / "run_info.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def grid(self) -> Path:
        return self.root / "reconstructions.png"

    @property
    def choices(self) -> Path:
        return self.root / "choices.json"


def resolve_image_size(config: Config, dataset: Dataset) -> Config:
    """Fill in the native image size when the preset leaves it open (image_size 0)."""
    if config.model.image_size:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(config.model, image_size=dataset.image_size))


def stage_offsets(config: Config) -> list[int]:
    """Global epoch count before each stage starts (checkpoint steps count epochs across stages)."""
    offsets, total = [], 0
    for n in config.train.epochs:
        offsets.append(total)
        total += n
    return offsets


def run_info(config: Config, dataset: Dataset, argv: list[str] | None) -> dict[str, Any]:
    """Everything needed to repeat a run: command, code and package versions, data fingerprint."""
    commit = _git("rev-parse", "HEAD")
    # Uncommitted edits to tracked files mean the commit alone does not name the code that ran.
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": argv if argv is not None else sys.argv,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "vaegan_jax": vaegan_jax.__version__,
        "git_commit": commit or None,
        "git_dirty": None if commit is None else bool(changes),
        "python": platform.python_version(),
        "packages": {name: _package_version(name) for name in RECORDED_PACKAGES},
        "devices": [str(d) for d in jax.devices()],
        "data": data_meta(dataset),
        "preset": config.preset,
    }


def _git(*args: str) -> str | None:
    """Output of a git command run beside this file, or None outside a git checkout."""
    try:
        done = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _silent(message: str) -> None:
    """A log for the processes that do not report."""


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def data_meta(dataset: Dataset) -> dict[str, Any]:
    """What a checkpoint records of its data, to recognise it again."""
    return {
        "name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint,
        "n_voxels": dataset.n_voxels, "image_size": dataset.image_size,
    }


def open_run_folder(out: str | os.PathLike, resume: bool, overwrite: bool) -> RunPaths:
    """Check that a run folder can be used without clobbering an earlier run, and that it is writable.

    Creates the folder when missing but deletes nothing: with `overwrite`, `run_training` clears the
    earlier run only once the new one has been set up without error.
    """
    paths = RunPaths(Path(out))
    if paths.root.exists() and not paths.root.is_dir():
        raise ConfigError(f"{paths.root}: exists and is not a folder")
    exists = paths.root.is_dir() and any(paths.root.iterdir())
    if exists and not (resume or overwrite):
        raise ConfigError(f"{paths.root}: run folder exists; pass --resume to continue it or --overwrite to replace it")
    if resume and not paths.config.exists():
        raise CheckpointError(f"{paths.root}: nothing to resume (no config.json)")
    if exists and overwrite and not resume and not (paths.config.exists() or paths.checkpoints.is_dir()):
        raise ConfigError(f"{paths.root}: not a run folder (no config.json or checkpoints); --overwrite only replaces runs")
    # Every process has decided on the folder as it was before any of them writes into it.
    barrier("run folder checked")
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        probe = paths.root / f".write_probe{jax.process_index()}"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{paths.root}: output folder is not writable ({err.strerror})") from None
    return paths


def read_saved_config(paths: RunPaths) -> Config:
    """The config a run folder was started with."""
    try:
        return config_lib.from_dict(json.loads(paths.config.read_text()))
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{paths.config}: unreadable run configuration ({type(err).__name__})") from None


def write_json(path: Path, document: Any) -> None:
    """Write JSON through a temporary file, so a killed process leaves the old file or the new, never half."""
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path)


def _check_free_space(paths: RunPaths, states: States) -> None:
    """Fail before training when the disk cannot hold two checkpoints of these states."""
    need = 2 * sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(states) if hasattr(x, "dtype"))
    free = shutil.disk_usage(paths.root).free
    if free < need:
        raise ConfigError(f"{paths.root}: {free / 2**20:.0f} MiB free, checkpoints need about {need / 2**20:.0f} MiB")


class Trainer:
    """Runs the stages of STAGES on one data set, writing into one run folder."""

    def __init__(
        self,
        config: Config,
        dataset: Dataset,
        paths: RunPaths,
        interrupt: threading.Event | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = resolve_image_size(config, dataset)
        config_lib.validate(self.config)
        self.dataset = dataset
        self.paths = paths
        self.interrupt = interrupt or threading.Event()
        # Every process runs the same program; only the first reports.
        self.progress = progress and is_main_process()
        self.log = log if is_main_process() else _silent
        self.timing: dict[str, dict[str, float]] = {}
        train = self.config.train
        self.data: PreparedData = prepare(
            dataset, train.val_trials, train.split_seed, train.selected_voxels, train.shipped_prior
        )
        if len(self.data.fit) < train.batch_size:
            raise ConfigError(f"batch size {train.batch_size} exceeds the {len(self.data.fit)} fitting trials")
        size = self.config.model.image_size
        stage1_images = self.data.fit.images
        if train.use_extra_images and self.data.extra_images is not None:
            stage1_images = np.concatenate([stage1_images, self.data.extra_images])
        self.mesh = training_mesh(train.ensemble, train.batch_size)
        self.stage1_images = replicate({"image": to_model_images(stage1_images, size)}, self.mesh)
        self.keys = place_members(member_keys(self.config), self.mesh)
        self.states = place_members(create_members(self.config, len(self.data.voxel_selection), self.keys), self.mesh)
        self._build_programs()
        self.offsets = stage_offsets(self.config)
        self.epochs_done = 0

    def _build_programs(self) -> None:
        """The data on the device and the compiled functions, for the current config and voxel selection."""
        size = self.config.model.image_size

        def split_arrays(trials: Trials) -> dict[str, jax.Array]:
            return {"image": to_model_images(trials.images, size), "voxels": jnp.asarray(self.data.model_voxels(trials))}

        self.arrays = {
            "images_only": self.stage1_images,
            **replicate({split: split_arrays(getattr(self.data, split)) for split in ("fit", "val", "test")}, self.mesh),
        }
        self.arrays["paired"] = self.arrays.pop("fit")
        self.epoch_runners = {
            s.number: EpochRunner(self.config, s, len(self.arrays["paired" if s.paired else "images_only"]["image"]), self.mesh)
            for s in STAGES
        }
        each_member = {"in_axes": (0, None, 0)}
        self.eval_loss_fns = {s.number: jax.jit(jax.vmap(make_eval_losses(self.config, s), **each_member)) for s in STAGES}
        self.reconstruct = {
            "fmri": jax.jit(jax.vmap(make_reconstruct(self.config, "cognitive_encoder"), **each_member)),
            "image": jax.jit(jax.vmap(make_reconstruct(self.config, "visual_encoder"), **each_member)),
        }

    def choose_settings(self) -> choices.Choice:
        """Choose what the config leaves to the run (choices.py) on the fit trials, then rebuild what depends on it.

        The cognitive encoder is made afresh for the chosen voxels (stage II starts it from ridge anyway);
        config.json and choices.json record the choice, so a resumed run and eval.py use it too.
        """
        states, keys = fetch((self.states, self.keys))
        members = range(self.config.train.ensemble)
        choice = choices.choose(
            self.config, [take_member(states, k) for k in members], [keys[k] for k in members],
            self.data.fit.voxels, self.data.fit.images,
        )
        self.config = choices.apply(self.config, choice)
        selection = select_voxels(self.data.fit.voxels, self.data.fit.images, choice.selected_voxels)
        self.data = dataclasses.replace(self.data, voxel_selection=selection)
        fresh = place_members(create_members(self.config, len(selection), self.keys), self.mesh)
        self.states = {**self.states, "cognitive_encoder": fresh["cognitive_encoder"]}
        self._build_programs()
        if is_main_process():
            write_json(self.paths.config, config_lib.to_dict(self.config))
            write_json(self.paths.choices, {
                "chosen": {"train.selected_voxels": choice.selected_voxels, "inference.temperature": choice.temperature},
                "criterion": "pcc", "folds": choice.folds, "trials": "fit", "candidates": choice.candidates,
            })
        self.log(choice.describe())
        return choice

    def summary(self) -> str:
        """A few lines on what this run is about to do."""
        cfg, data = self.config, self.data
        extra = 0 if data.extra_images is None or not cfg.train.use_extra_images else len(data.extra_images)
        reads = f"{len(data.voxel_selection)} of {self.dataset.n_voxels}"
        if choices.needs_choice(cfg):
            reads = "the voxels that cross-validation on the fit trials chooses after stage I (choices.json)"
        return "\n".join([
            f"data     {self.dataset.summary()}",
            f"split    fit {len(data.fit)} / val {len(data.val)} / test {len(data.test)} trials "
            f"(+{extra} image-only for stage I); voxels z-scored with fit-trial statistics, the cognitive "
            f"encoder reads {reads}",
            f"prior    stage I's image-only images: {data.extra_source if extra else 'none'}",
            f"model    preset {cfg.preset}: {cfg.model.image_size}x{cfg.model.image_size} images, "
            f"latent {cfg.model.latent_dim}, batch {cfg.train.batch_size}, epochs I/II/III {cfg.train.epochs}",
            f"members  {cfg.train.ensemble} (seeds {cfg.train.seed}..{cfg.train.seed + cfg.train.ensemble - 1}) "
            f"{describe(self.mesh, cfg.train.batch_size)}: {', '.join(str(d) for d in jax.devices())}",
            f"run      {self.paths.root}",
        ])

    # -- checkpoints -------------------------------------------------------------------------------

    def checkpoint_arrays(self) -> dict[str, Any]:
        """The arrays a checkpoint holds: every train state, the voxel scaler and the base RNG key."""
        scaler = self.data.scaler
        # Orbax saves collectively from every process: each array must be a global one on the mesh.
        mean, std = replicate((jnp.asarray(scaler.mean), jnp.asarray(scaler.std)), self.mesh)
        return checkpoint_tree(self.states, mean, std, self.keys)

    def checkpoint_meta(self, stage: Stage, epoch_in_stage: int) -> dict[str, Any]:
        """The JSON half of a checkpoint."""
        return {
            "stage": stage.number,
            "epoch_in_stage": epoch_in_stage,
            "epochs_done": self.epochs_done,
            "config": config_lib.to_dict(self.config),
            "data": data_meta(self.dataset),
            "split": {
                "fit": self.data.fit.indices.tolist(),
                "val": self.data.val.indices.tolist(),
                "test": self.data.test.indices.tolist(),
                "voxels": self.data.voxel_selection.tolist(),
            },
            "vaegan_jax": vaegan_jax.__version__,
        }

    def restore(self, store: CheckpointStore, step: int) -> dict[str, Any]:
        """Load checkpoint `step` into this trainer; returns its metadata."""
        arrays, meta = store.restore(step, self.checkpoint_arrays())
        if meta["data"]["fingerprint"] != self.dataset.fingerprint:
            raise CheckpointError(
                f"{store.directory}/{step}: checkpoint was trained on data {meta['data']['fingerprint']} "
                f"({meta['data']['source']}), not on {self.dataset.fingerprint} ({self.dataset.source})"
            )
        self.states = arrays["states"]
        self.epochs_done = meta["epochs_done"]
        return meta

    # -- evaluation ------------------------------------------------------------------------------

    def member_reconstructions(self, split: str) -> dict[str, np.ndarray]:
        """Each member's deterministic reconstructions of a split by both paths: path -> (member, trial, H, W),
        in [0, 1]. The model's own reconstruction is their average over members."""
        arrays = self.arrays[split]
        return {
            path: np.stack([to_native_images(member, self.dataset.image_size) for member in
                            fetch(self.reconstruct[path](self.states, arrays[source], self.keys))])
            for path, source in (("fmri", "voxels"), ("image", "image"))
        }

    def _path_metrics(self, split: str, reconstructions: dict[str, np.ndarray]) -> dict[str, float]:
        trials = getattr(self.data, split)
        result = {}
        for path, images in reconstructions.items():
            per_image = metrics_lib.reconstruction_metrics(trials.images, images)
            result.update({f"{name}_{path}": float(np.mean(per_image[name])) for name in SUMMARY_METRICS})
        return result

    def validate(self, stage: Stage, writer: SummaryWriter) -> float | None:
        """Log validation losses, metrics and a reconstruction grid; return the fMRI-path validation PCC."""
        if len(self.data.val) == 0:
            return None
        step = self.epochs_done
        keys = jax.vmap(lambda key: jax.random.fold_in(key, 10_000 + step))(self.keys)
        for name, value in fetch(self.eval_loss_fns[stage.number](self.states, self.arrays["val"], keys)).items():
            writer.add_scalar(f"{stage.name}/val/{name}", float(np.mean(value)), step)
        model = {path: members.mean(axis=0) for path, members in self.member_reconstructions("val").items()}
        values = self._path_metrics("val", model)
        for name, value in values.items():
            writer.add_scalar(f"{stage.name}/val/{name}", value, step)
        grid = labelled_grid(
            [self.data.val.images, model["image"], model["fmri"]], ["stimulus", "image path", "fMRI path"]
        )
        writer.add_image(f"{stage.name}/val/reconstructions", grid[..., None], step, dataformats="HWC")
        # Stage I has not trained the fMRI path yet: its checkpoints are not candidates for "best".
        return values["pcc_fmri"] if stage.number > 1 else None

    # -- the loop ------------------------------------------------------------------------------

    def _log_epoch(self, stage: Stage, metrics: dict[str, np.ndarray], writer: SummaryWriter) -> dict[str, float]:
        means = {name: float(np.mean(value)) for name, value in metrics.items() if not name.startswith("finite/")}
        for name, value in means.items():
            writer.add_scalar(f"{stage.name}/{name}", value, self.epochs_done)
        return means

    def _check_finite(self, stage: Stage, epoch: int, metrics: dict[str, np.ndarray]) -> str | None:
        """Where the epoch first went non-finite (member, step, networks, loss values), or None if it did not."""
        n_members = self.config.train.ensemble
        for k in range(n_members):
            where = f"{stage.name} epoch {epoch}" + (f", member {k}" if n_members > 1 else "")
            losses = {learner: np.atleast_1d(metrics[f"loss/{learner}"][k]) for learner in stage.learners}
            n_steps = len(next(iter(losses.values())))
            for step in range(n_steps):
                # One network's blow-up reaches the others' losses within the same step, so name them all.
                bad = [f"{learner} ({float(values[step])})" for learner, values in losses.items()
                       if not np.isfinite(values[step])]
                if bad:
                    return f"{where}, step {step + 1} of {n_steps}: non-finite loss of {', '.join(bad)}"
            broken = [learner for learner in stage.learners if not bool(metrics[f"finite/{learner}"][k])]
            if broken:
                return f"{where}: non-finite parameters or BatchNorm statistics of {', '.join(broken)}"
        return None

    def run_stage(self, stage: Stage, store: CheckpointStore, writer: SummaryWriter) -> None:
        """Train one stage from wherever `epochs_done` says it stands."""
        total = self.config.train.epochs[stage.number - 1]
        start = self.epochs_done - self.offsets[stage.number - 1]
        if total == 0 or start >= total:
            return
        data = self.arrays["paired" if stage.paired else "images_only"]
        if start == 0 and "cognitive_encoder" in stage.learners and self.config.train.cognitive_init == "ridge":
            states, voxels, images = fetch((self.states, data["voxels"], data["image"]))
            self.states = place_members(stack_members([
                ridge_initialised_cognitive_encoder(self.config, take_member(states, k), voxels, images)
                for k in range(self.config.train.ensemble)
            ]), self.mesh)
        train = self.config.train
        store.wait()
        best_score = store.best_score()
        bar = tqdm(range(start, total), desc=f"stage {stage.number}", initial=start, total=total,
                   disable=not self.progress, leave=True, dynamic_ncols=True)
        for epoch in bar:
            epoch_keys = jax.vmap(lambda key: jax.random.fold_in(jax.random.fold_in(key, stage.number), epoch))(self.keys)
            states, metrics = self.epoch_runners[stage.number](self.states, data, epoch_keys)
            metrics = fetch(metrics)
            # A signal may reach the processes in different epochs; they must stop after the same one.
            stop = any_process(self.interrupt.is_set())
            problem = self._check_finite(stage, epoch + 1, metrics)
            if problem is not None:
                bar.close()
                self._handle_divergence(stage, problem, store)
                return
            self.states = states
            self.epochs_done += 1
            means = self._log_epoch(stage, metrics, writer)
            bar.set_postfix({k.split("/")[1][:5]: f"{v:.3g}" for k, v in means.items() if k.startswith("loss/")})
            last = epoch + 1 == total
            evaluate = last or (epoch + 1) % train.eval_every == 0 or stop
            score = self.validate(stage, writer) if evaluate else None
            improved = score is not None and (best_score is None or score > best_score)
            best_score = score if improved else best_score
            # A validation that is no new best needs no checkpoint: saving the paper preset's 0.5 GB took
            # about 1.2 s, several epochs' worth of GPU steps.
            save = improved or last or stop or (epoch + 1) % train.checkpoint_every == 0
            if save:
                store.save(self.epochs_done, self.checkpoint_arrays(), self.checkpoint_meta(stage, epoch + 1), score)
            if evaluate or save:
                writer.flush()
                if not self.progress:
                    self.log(f"{stage.name} epoch {epoch + 1}/{total}: "
                             + ", ".join(f"{k} {v:.4g}" for k, v in means.items() if k.startswith("loss/"))
                             + ("" if score is None else f", val PCC (fMRI) {score:.4f}"))
            if stop:
                bar.close()
                store.wait()
                raise Interrupted(
                    f"interrupted: saved checkpoint {self.epochs_done} in {store.directory}; "
                    f"continue with --resume --out {self.paths.root}"
                )
        bar.close()

    def _handle_divergence(self, stage: Stage, problem: str, store: CheckpointStore) -> None:
        """Stop the run (on_nan=stop) or roll back to the last good checkpoint and end the stage."""
        store.wait()
        last = store.latest_step()
        if last is None:
            raise Diverged(f"diverged at {problem}; no checkpoint to roll back to yet")
        if self.config.train.on_nan == "stop":
            raise Diverged(f"diverged at {problem}; the last good checkpoint is {store.directory / str(last)}")
        meta = self.restore(store, last)
        self.log(f"warning: diverged at {problem}; restored checkpoint {last} (stage {meta['stage']}, "
                 f"epoch {meta['epoch_in_stage']}) and ended {stage.name} early")

    def resume(self) -> int | None:
        """Load the run folder's newest checkpoint, if it has one; return its step."""
        store = CheckpointStore(self.paths.checkpoints)
        try:
            step = store.latest_step()
            if step is not None:
                self.restore(store, step)
                self.log(f"resuming after epoch {self.epochs_done} (checkpoint {step})")
            return step
        finally:
            store.close()

    def train(self) -> dict[str, Any]:
        """Run every remaining stage; return the final validation and test metrics of the best checkpoint.

        `self.timing` then holds the wall time of each part of this call (a resumed run's counts from the resume).
        """
        store = CheckpointStore(self.paths.checkpoints)
        timing = self.timing = {}
        try:
            with SummaryWriter(str(self.paths.tensorboard), write_to_disk=is_main_process()) as writer:
                for stage in STAGES:
                    if stage.paired and choices.needs_choice(self.config):
                        start = time.perf_counter()
                        self.choose_settings()
                        timing["choices"] = {"seconds": round(time.perf_counter() - start, 3)}
                    stage_end = self.offsets[stage.number - 1] + self.config.train.epochs[stage.number - 1]
                    if self.epochs_done < stage_end:
                        self.epochs_done = max(self.epochs_done, self.offsets[stage.number - 1])
                        start, epochs_before = time.perf_counter(), self.epochs_done
                        self.run_stage(stage, store, writer)
                        store.wait()
                        timing[stage.name] = {"epochs": self.epochs_done - epochs_before,
                                              "seconds": round(time.perf_counter() - start, 3)}
                start = time.perf_counter()
                report = self.final_report(store, writer)
                timing["final_report"] = {"seconds": round(time.perf_counter() - start, 3)}
                return report
        finally:
            store.close()

    def final_report(self, store: CheckpointStore, writer: SummaryWriter) -> dict[str, Any]:
        """Restore the best checkpoint by validation score; write metrics.json and the reconstruction grid."""
        best = store.best_step()
        if best is not None:
            meta = self.restore(store, best)
            stage, epoch = meta["stage"], meta["epoch_in_stage"]
        else:
            stage, epoch = 0, 0
        splits = [split for split in ("val", "test") if len(getattr(self.data, split))]
        members = {split: self.member_reconstructions(split) for split in splits}

        def split_metrics(split: str, pick: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
            """Metrics of the images `pick` takes from each path's (member, trial, H, W) reconstructions."""
            if split not in members:
                return {}
            return self._path_metrics(split, {path: pick(images) for path, images in members[split].items()})

        def average(images: np.ndarray) -> np.ndarray:
            return images.mean(axis=0)

        report = {
            "checkpoint_step": best,
            "stage": stage,
            "epoch_in_stage": epoch,
            "val": split_metrics("val", average),
            "test": split_metrics("test", average),
        }
        if self.config.train.ensemble > 1:
            report["members"] = [
                {"seed": self.config.train.seed + k,
                 **{split: split_metrics(split, lambda images: images[k]) for split in ("val", "test")}}
                for k in range(self.config.train.ensemble)
            ]
        test = {path: average(images) for path, images in members["test"].items()}
        grid = labelled_grid(
            [self.data.test.images, test["fmri"], test["image"]], ["stimulus", "fMRI path", "image path"]
        )
        writer.add_image("final/test_reconstructions", grid[..., None], self.epochs_done, dataformats="HWC")
        if is_main_process():
            save_png(self.paths.grid, grid)
            write_json(self.paths.metrics, report)
        return report


def run_training(
    config: Config,
    dataset: Dataset,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    argv: list[str] | None = None,
    interrupt: threading.Event | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[RunPaths, dict[str, Any], dict[str, dict[str, float]]]:
    """Train in run folder `out` (continuing it with `resume`); return its paths, the final report and the
    wall time of each stage and of the report (also written to run_info.json, under `resumed` on a resume).

    With several processes every one calls this alike; only process 0 writes files and logs.
    """
    log = log if is_main_process() else _silent
    paths = open_run_folder(out, resume, overwrite)
    if resume:
        saved = read_saved_config(paths)
        if resolve_image_size(config, dataset) != saved:
            log(f"note: --resume continues with the run's saved config {paths.config}")
        config = saved
    trainer = Trainer(config, dataset, paths, interrupt=interrupt, progress=progress, log=log)
    _check_free_space(paths, trainer.checkpoint_arrays())
    info = run_info(trainer.config, dataset, argv)
    info["stage1_extra_images"] = trainer.data.extra_source if trainer.config.train.use_extra_images else "none"
    if resume:
        # Validates the checkpoint before the run folder is touched.
        trainer.resume()
        previous = json.loads(paths.run_info.read_text()) if paths.run_info.exists() else {}
        resumed = {key: value for key, value in info.items() if key not in ("data", "preset")}
        if is_main_process():
            write_json(paths.run_info, {**previous, "resumed": [*previous.get("resumed", []), resumed]})
    elif is_main_process():
        if overwrite:
            shutil.rmtree(paths.root)
            paths.root.mkdir()
        write_json(paths.config, config_lib.to_dict(trainer.config))
        write_json(paths.run_info, info)
    barrier("run folder ready")
    log(trainer.summary())
    report = trainer.train()
    if is_main_process():
        info = json.loads(paths.run_info.read_text())
        (info["resumed"][-1] if resume else info)["timing"] = trainer.timing
        write_json(paths.run_info, info)
    return paths, report, trainer.timing
