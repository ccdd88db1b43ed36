"""The three-stage training loop: the data on the device, one compiled call per epoch, validation,
checkpoints, resumption, interruption and divergence handling.

The run folder and its provenance are runs.py's, reconstructions and their scores reconstruction.py's, the
cadence of validations and checkpoints cadence.py's, and what is logged goes through writer.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaegan_jax import cadence, choices, history, rng
from vaegan_jax import config as config_lib
from vaegan_jax.baselines import RidgeDecoder
from vaegan_jax.checkpoints import CheckpointMeta, CheckpointStore, DataRecord, Split, abstract_tree, checkpoint_tree, unpack
from vaegan_jax.config import Config
from vaegan_jax.data.dataset import Dataset, Trials
from vaegan_jax.data.origin import DataOrigin
from vaegan_jax.divergence import first_non_finite
from vaegan_jax.data.prepare import PreparedData, prepare, select_voxels, to_model_images
from vaegan_jax.errors import CheckpointError, ConfigError, Diverged, Interrupted, VaeganError
from vaegan_jax.images import labelled_grid, save_png
from vaegan_jax.initialisation import ridge_initialised_members
from vaegan_jax.reconstruction import LOWER_IS_BETTER, Reconstructor, ensemble_scores, path_scores
from vaegan_jax.runs import (
    RunPaths, check_free_space, describe_run, open_run_folder, read_saved_config, run_info, write_json,
)
from vaegan_jax.sharding import any_process, barrier, describe, fetch, is_main_process, place_members, replicate, training_mesh
from vaegan_jax.steps import (
    STAGES, EpochRunner, Stage, States, create_members, decoding_states, hand_on_averages, make_eval_losses,
    take_member,
)
from vaegan_jax.writer import RunWriter, main_process_log


def resolve_image_size(config: Config, dataset: Dataset) -> Config:
    """Fill in the native image size when the preset leaves it open (image_size 0)."""
    if config.model.image_size:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(config.model, image_size=dataset.image_size))


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
        origin: DataOrigin | None = None,
    ) -> None:
        self.config = resolve_image_size(config, dataset)
        config_lib.validate(self.config)
        self.dataset = dataset
        self.origin = DataOrigin.guess(dataset) if origin is None else origin
        self.paths = paths
        self.interrupt = interrupt or threading.Event()
        self.progress = progress
        # Every process runs the same program; only the first reports.
        self.log = main_process_log(log)
        self.timing: dict[str, dict[str, float]] = {}
        train = self.config.train
        self.data: PreparedData = prepare(
            dataset, train.val_trials, train.split_seed, train.selected_voxels, train.shipped_prior
        )
        if len(self.data.fit) < train.batch_size:
            raise ConfigError(f"batch size {train.batch_size} exceeds the {len(self.data.fit)} fitting trials")
        # The image-only extras stage I learns from are also the prior of the encoding model that the cognitive
        # encoder's start may mix in (train.readout_mix).
        self.extras = self.data.extra_images if train.use_extra_images else None
        stage1_images = self.data.fit.images if self.extras is None else np.concatenate([self.data.fit.images, self.extras])
        self.stage1_images = to_model_images(stage1_images, self.config.model.image_size)
        # Stage I's snapshots that may become members stay on disk until the run has chosen among them.
        self.snapshot_steps = config_lib.snapshot_epochs(train) if config_lib.most_snapshots(train) > 1 else ()
        self._hold_members(1)
        self.offsets = cadence.stage_offsets(self.config.train.epochs)
        # The last checkpoint before stage III stays for good: its generator has seen no voxels, as the
        # latent-ridge baseline's has not, so benchmarks/decoder_cv.py compares the two fairly on it.
        before_stage_three = self.offsets[2]
        self.kept_steps = self.snapshot_steps + ((before_stage_three,) if before_stage_three else ())
        self.epochs_done = 0

    @property
    def n_members(self) -> int:
        """How many networks of each kind the trainer holds now."""
        return len(self.keys)

    def _hold_members(self, stage: int) -> None:
        """Mesh, keys and freshly initialised states for the members of `stage`, and the programs for them."""
        train = self.config.train
        self.mesh = training_mesh(config_lib.member_count(self.config, stage), train.batch_size)
        self.keys = place_members(rng.member_keys(self.config, stage), self.mesh)
        self.states = place_members(create_members(self.config, len(self.data.voxel_selection), self.keys), self.mesh)
        self._build_programs()

    def _build_programs(self) -> None:
        """The data on the device and the compiled functions, for the current config, members and voxel selection."""
        size = self.config.model.image_size

        def split_arrays(trials: Trials) -> dict[str, jax.Array]:
            return {"image": to_model_images(trials.images, size), "voxels": jnp.asarray(self.data.model_voxels(trials))}

        self.arrays = {
            "images_only": replicate({"image": self.stage1_images}, self.mesh),
            **replicate({split: split_arrays(getattr(self.data, split)) for split in ("fit", "val", "test")}, self.mesh),
        }
        self.arrays["paired"] = self.arrays.pop("fit")
        self.epoch_runners = {
            s.number: EpochRunner(self.config, s, len(self.arrays["paired" if s.paired else "images_only"]["image"]), self.mesh)
            for s in STAGES
        }
        self.eval_loss_fns = {
            s.number: jax.jit(jax.vmap(make_eval_losses(self.config, s), in_axes=(0, None, 0, 0))) for s in STAGES
        }
        self.reconstructor = Reconstructor(self.config, self.mesh)

    def enter_paired_stages(self, store: CheckpointStore) -> None:
        """Take stage I's networks as it hands them on (their weight averages, if it keeps them), choose what the
        config leaves to the run (choices.py) on the fit trials, then make the chosen stage-I variant's networks,
        or the chosen snapshots, the members and rebuild what depends on the choice.

        The cognitive encoders are made afresh for the chosen voxels (stage II starts them from ridge anyway);
        config.json and choices.json record the choice, so a resumed run and eval.py use it too.
        """
        snapshots = [hand_on_averages(states) for states in fetch(self._stage1_snapshots(store))]
        chose = config_lib.needs_choice(self.config)
        if chose:
            train, fit = self.config.train, self.data.fit
            candidates = [take_member(member_states, k) for member_states in snapshots
                          for k in range(config_lib.member_count(self.config, 1))]
            if config_lib.prior_variants(self.config, 1):
                prior = choices.choose_prior(self.config, candidates, list(rng.member_keys(self.config, 1)),
                                             fit.voxels, fit.images, self.extras)
                block = slice(prior.variant * train.ensemble, (prior.variant + 1) * train.ensemble)
                snapshots = [jax.tree.map(lambda a: a[block], snapshots[0])]
                self.config, choice, record = choices.apply_prior(self.config, prior), prior.choice, {"stage1_prior": prior.to_json()}
                self.log(prior.describe())
            else:
                most = dataclasses.replace(self.config, train=dataclasses.replace(train, snapshots=len(snapshots)))
                choice = choices.choose(self.config, candidates, list(rng.member_keys(most, 2)), fit.voxels, fit.images,
                                        self.extras)
                self.config, record = choices.apply(self.config, choice), {}
            selection = select_voxels(fit.voxels, fit.images, choice.selected_voxels)
            self.data = dataclasses.replace(self.data, voxel_selection=selection)
            if is_main_process():
                write_json(self.paths.config, config_lib.to_dict(self.config))
                write_json(self.paths.choices, {**record, **choice.to_json()})
            self.log(choice.describe())
        kept = jax.tree.map(lambda *parts: np.concatenate(parts), *snapshots[: self.config.train.snapshots])
        # Other voxels or more members: fresh cognitive encoders, mesh and programs for them.
        if chose or self.n_members != config_lib.member_count(self.config, 2):
            self._hold_members(2)
        self.states = {**place_members(kept, self.mesh), "cognitive_encoder": self.states["cognitive_encoder"]}

    def _stage1_snapshots(self, store: CheckpointStore) -> list[States]:
        """The members' states at each stage-I snapshot the run may keep, latest first: the trainer's own (the end
        of stage I), then the earlier ones from their checkpoints."""
        earlier = config_lib.snapshot_epochs(self.config.train)[1:]
        missing = [step for step in earlier if step not in store.steps()]
        if missing:
            raise CheckpointError(f"{store.directory}: no checkpoint of stage-I epoch {missing[0]}, a snapshot this "
                                  "run may make a member of; it was written by another version of vaegan_jax")
        return [self.states, *(self._read_states(store, step)[1] for step in earlier)]

    def summary(self) -> str:
        """A few lines on what this run is about to do."""
        return describe_run(self.config, self.dataset, self.data, describe(self.mesh, self.config.train.batch_size),
                            self.paths)

    # -- checkpoints -------------------------------------------------------------------------------

    def checkpoint_arrays(self) -> dict[str, Any]:
        """The arrays a checkpoint holds: every train state, the voxel scaler and the base RNG key."""
        scaler = self.data.scaler
        # Orbax saves collectively from every process: each array must be a global one on the mesh.
        mean, std = replicate((jnp.asarray(scaler.mean), jnp.asarray(scaler.std)), self.mesh)
        return checkpoint_tree(self.states, mean, std, self.keys)

    def checkpoint_meta(self, stage: Stage, epoch_in_stage: int) -> CheckpointMeta:
        """The JSON half of a checkpoint taken now, `epoch_in_stage` epochs into `stage`."""
        return CheckpointMeta(stage.number, epoch_in_stage, self.epochs_done, self.config,
                              DataRecord.of(self.dataset, self.origin), Split.of(self.data))

    def _read_states(self, store: CheckpointStore, step: int) -> tuple[CheckpointMeta, States, Any]:
        """Checkpoint `step`'s metadata, train states and RNG keys, in this trainer's structures (their optimisers
        and apply functions, so the compiled epoch programs run on without compiling again)."""
        where = store.directory / str(step)
        meta = CheckpointMeta.from_json(store.read_meta(step), where)
        if meta.data.fingerprint != self.dataset.fingerprint:
            raise CheckpointError(f"{where}: checkpoint was trained on data {meta.data.fingerprint} ({meta.data.source}), "
                                  f"not on {self.dataset.fingerprint} ({self.dataset.source})")
        if config_lib.prior_variants(meta.config, meta.stage) and not config_lib.prior_variants(self.config, 1):
            # Saved before the run kept one of stage I's variants: it holds them all, and the run chooses again, alike.
            self.config = choices.unmade(self.config, meta.config)
        if config_lib.member_count(meta.config, meta.stage) != self.n_members:
            self._hold_members(meta.stage)
        # A checkpoint's own config shapes its arrays: stage I's predate the run's choice of voxels.
        tree, _ = store.restore(step, abstract_tree(meta.config, self.dataset.n_voxels, self.mesh, meta.stage))
        arrays = unpack(tree)
        scaler = self.data.scaler
        if not (np.array_equal(arrays.scaler.mean, scaler.mean) and np.array_equal(arrays.scaler.std, scaler.std)):
            raise CheckpointError(f"{where}: its voxel statistics differ from those rebuilt from the data; it was "
                                  "written by another version of vaegan_jax")
        states = jax.tree.unflatten(jax.tree.structure(self.states), jax.tree.leaves(arrays.states))
        selection = self.data.voxel_selection
        if list(meta.split.voxels) != selection.tolist():
            # Saved before the choice, its cognitive encoder reads other voxels and has not been trained yet
            # (stage II starts it afresh from ridge): a fresh one for the chosen voxels stands in. Not the
            # trainer's own: after a divergence its arrays went to the failed epoch (donated) or hold NaNs.
            fresh = create_members(self.config, len(selection), arrays.keys)["cognitive_encoder"]
            states = {**states, "cognitive_encoder": place_members(fresh, self.mesh)}
        return meta, states, arrays.keys

    def restore(self, store: CheckpointStore, step: int) -> CheckpointMeta:
        """Load checkpoint `step` into this trainer (states, RNG keys, epoch count); return its metadata."""
        meta, self.states, self.keys = self._read_states(store, step)
        self.epochs_done = meta.epochs_done
        return meta

    # -- validation ------------------------------------------------------------------------------

    def member_reconstructions(self, split: str, stage: int) -> dict[str, np.ndarray]:
        """Each member's deterministic reconstructions of a split by both paths, decoded as a checkpoint of `stage`
        decodes (load_run): path -> (member, trial, H, W), in [0, 1]. The model's own reconstruction is their
        average over members."""
        arrays, size = self.arrays[split], self.dataset.image_size
        states = decoding_states(self.states, stage)
        return {path: self.reconstructor(states, self.keys, arrays[source], path, size)
                for path, source in (("fmri", "voxels"), ("image", "image"))}

    def ridge_on_validation(self) -> dict[str, float]:
        """The floor the fMRI path should clear: ridge regression from every voxel to pixels, fitted on the fit
        trials, scored on the validation trials ({"pcc_ridge": ..., "mse_ridge": ..., ...})."""
        ridge = RidgeDecoder().fit(self.data.fit.voxels, self.data.fit.images)
        return path_scores(self.data.val.images, {"ridge": ridge.predict(self.data.val.voxels)})

    def validate(self, stage: Stage, writer: RunWriter) -> float | None:
        """Log validation losses, metrics and a reconstruction grid; return the fMRI-path validation PCC."""
        if len(self.data.val) == 0:
            return None
        step = self.epochs_done
        losses = fetch(self.eval_loss_fns[stage.number](self.states, self.arrays["val"], rng.validate(self.keys, step),
                                                        self.epoch_runners[stage.number].member_loss))
        writer.scalars({name: float(np.mean(value)) for name, value in losses.items()}, step, f"{stage.name}/val")
        members = self.member_reconstructions("val", stage.number)
        model = {path: images.mean(axis=0) for path, images in members.items()}
        values = path_scores(self.data.val.images, model)
        writer.scalars(values, step, f"{stage.name}/val")
        writer.validation({"step": step, "stage": stage.number, "epoch": step - self.offsets[stage.number - 1], **values})
        grid = labelled_grid(
            [self.data.val.images, model["image"], model["fmri"]], ["stimulus", "image path", "fMRI path"]
        )
        writer.image(f"{stage.name}/val/reconstructions", grid, step)
        # Stage I has not trained the fMRI path yet: its checkpoints are not candidates for "best".
        return values["pcc_fmri"] if stage.number > 1 else None

    # -- the loop ------------------------------------------------------------------------------

    def _log_epoch(self, stage: Stage, metrics: dict[str, np.ndarray], writer: RunWriter) -> dict[str, float]:
        means = {name: float(np.mean(value)) for name, value in metrics.items() if not name.startswith("finite/")}
        writer.scalars(means, self.epochs_done, stage.name)
        return means

    def run_stage(self, stage: Stage, store: CheckpointStore, writer: RunWriter) -> float:
        """Train one stage from wherever `epochs_done` says it stands; return the seconds it waited on the
        epochs' results (steps and compilation), the rest of its time being the loop's own work."""
        total = self.config.train.epochs[stage.number - 1]
        start = self.epochs_done - self.offsets[stage.number - 1]
        if total == 0 or start >= total:
            return 0.0
        data = self.arrays["paired" if stage.paired else "images_only"]
        if start == 0 and "cognitive_encoder" in stage.learners and self.config.train.cognitive_init == "ridge":
            states, voxels, images = fetch((self.states, data["voxels"], data["image"]))
            extras = None if self.extras is None else to_model_images(self.extras, self.config.model.image_size)
            self.states = place_members(ridge_initialised_members(self.config, states, voxels, images, extras), self.mesh)
        train = self.config.train
        store.wait()
        best_score = store.best_score()
        runner = self.epoch_runners[stage.number]
        bar = writer.bar(start, total, f"stage {stage.number}")
        ahead, stopping, waited = None, False, 0.0
        for epoch in bar:
            begun = time.perf_counter()
            states, metrics = ahead or runner(self.states, data, rng.train(self.keys, stage.number, epoch))
            # An epoch that the schedule neither validates nor saves hands its states straight on to the next,
            # so the device trains on while the host checks and logs this one: no round trip between them.
            snapshot = stage.number == 1 and epoch + 1 in self.snapshot_steps
            handed_on = (not stopping and not snapshot
                         and cadence.hands_on(epoch + 1, total, train.eval_every, train.checkpoint_every))
            ahead = runner(states, data, rng.train(self.keys, stage.number, epoch + 1)) if handed_on else None
            metrics = fetch(metrics)
            waited += time.perf_counter() - begun
            # A signal may reach the processes in different epochs; they must stop after the same one, and
            # after the next if this one's states have gone on to it.
            stop = stopping or any_process(self.interrupt.is_set())
            problem = first_non_finite(stage, epoch + 1, metrics)
            if problem is not None:
                bar.close()
                self._handle_divergence(stage, problem, store)
                return waited
            self.states = states
            self.epochs_done += 1
            means = self._log_epoch(stage, metrics, writer)
            bar.set_postfix({k.split("/")[1][:5]: f"{v:.3g}" for k, v in means.items() if k.startswith("loss/")})
            if handed_on:
                stopping = stop
                continue
            validate = cadence.validate_now(epoch + 1, total, train.eval_every, stop)
            score = self.validate(stage, writer) if validate else None
            improved = cadence.improves(score, best_score)
            best_score = score if improved else best_score
            save = snapshot or cadence.save_now(epoch + 1, total, train.checkpoint_every, improved, stop)
            if save:
                meta = self.checkpoint_meta(stage, epoch + 1).to_json()
                store.save(self.epochs_done, self.checkpoint_arrays(), meta, score)
            if validate or save:
                writer.flush()
                if not writer.progress:
                    writer.log(f"{stage.name} epoch {epoch + 1}/{total}: "
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
        return waited

    def _handle_divergence(self, stage: Stage, problem: str, store: CheckpointStore) -> None:
        """Stop the run (on_nan=stop) or roll back to the last good checkpoint and end the stage."""
        store.wait()
        last = store.latest_step()
        if last is None:
            raise Diverged(f"diverged at {problem}; no checkpoint to roll back to yet")
        if self.config.train.on_nan == "stop":
            raise Diverged(f"diverged at {problem}; the last good checkpoint is {store.directory / str(last)}")
        meta = self.restore(store, last)
        self._forget_validations_after(last)
        self.log(f"warning: diverged at {problem}; restored checkpoint {last} (stage {meta.stage}, "
                 f"epoch {meta.epoch_in_stage}) and ended {stage.name} early")

    def resume(self) -> int | None:
        """Load the run folder's newest checkpoint, if it has one, and forget the validations after it (their epochs
        train again); return its step."""
        store = CheckpointStore(self.paths.checkpoints, keep=self.kept_steps)
        try:
            step = store.latest_step()
            if step is not None:
                self.restore(store, step)
                self.log(f"resuming after epoch {self.epochs_done} (checkpoint {step})")
            self._forget_validations_after(step or 0)
            return step
        finally:
            store.close()

    def _forget_validations_after(self, step: int) -> None:
        """Drop validation.csv's rows after checkpoint `step`: a resume or a rollback trains their epochs again."""
        if is_main_process():
            history.forget_after(self.paths.validation, step)

    def train(self) -> dict[str, Any]:
        """Run every remaining stage; return the final validation and test metrics of the best checkpoint.

        `self.timing` then holds the wall time of each part of this call (a resumed run's counts from the resume).
        """
        store = CheckpointStore(self.paths.checkpoints, keep=self.kept_steps)
        timing = self.timing = {}
        try:
            with RunWriter(self.paths.tensorboard, self.paths.validation, self.progress, self.log) as writer:
                for stage in STAGES:
                    # Stage I hands its networks on once, before the first paired epoch (also after a resume
                    # from stage I's end or a rollback within it).
                    if stage.number == 2 and self.epochs_done <= self.offsets[1]:
                        start, choosing = time.perf_counter(), config_lib.needs_choice(self.config)
                        self.enter_paired_stages(store)
                        if choosing:
                            timing["choices"] = {"seconds": round(time.perf_counter() - start, 3)}
                    stage_end = self.offsets[stage.number - 1] + self.config.train.epochs[stage.number - 1]
                    if self.epochs_done < stage_end:
                        self.epochs_done = max(self.epochs_done, self.offsets[stage.number - 1])
                        start, epochs_before = time.perf_counter(), self.epochs_done
                        waited = self.run_stage(stage, store, writer)
                        store.wait()
                        # waiting: the loop blocked on the epochs' results (steps, compilation); the rest is its
                        # own work (validation, checkpoints, logging, the choice's rebuild), docs/performance.md.
                        timing[stage.name] = {"epochs": self.epochs_done - epochs_before,
                                              "seconds": round(time.perf_counter() - start, 3),
                                              "waiting_seconds": round(waited, 3)}
                start = time.perf_counter()
                report = self.final_report(store, writer)
                timing["final_report"] = {"seconds": round(time.perf_counter() - start, 3)}
                return report
        finally:
            store.close()

    def final_report(self, store: CheckpointStore, writer: RunWriter) -> dict[str, Any]:
        """Restore the best checkpoint by validation score; write metrics.json (its figures and each stage's
        validations, `history.stage_summary`) and the reconstruction grid."""
        best = store.best_step()
        meta = None if best is None else self.restore(store, best)
        stage = 0 if meta is None else meta.stage
        members = {split: self.member_reconstructions(split, stage)
                   for split in ("val", "test") if len(getattr(self.data, split))}
        stimuli = {split: getattr(self.data, split).images for split in members}
        origins = config_lib.member_origins(self.config, 1 if self.n_members == self.config.train.ensemble else 2)
        report = {
            "checkpoint_step": best,
            "stage": stage,
            "epoch_in_stage": 0 if meta is None else meta.epoch_in_stage,
            **ensemble_scores(stimuli, members, origins),
        }
        if len(self.data.val):
            report["val"].update(self.ridge_on_validation())
            trailing = measures_ridge_leads(report["val"])
            if trailing:
                self.log("warning: on the validation trials the fMRI path trails ridge regression from voxels to "
                         f"pixels on {', '.join(trailing)}; stage I's prior may be too weak for these data (more "
                         "image-only images, stage-I epochs or train.elastic_augment may help)")
        test = {path: images.mean(axis=0) for path, images in members["test"].items()}
        grid = labelled_grid(
            [self.data.test.images, test["fmri"], test["image"]], ["stimulus", "fMRI path", "image path"]
        )
        writer.image("final/test_reconstructions", grid, self.epochs_done)
        if is_main_process():
            report["validation"] = history.stage_summary(history.read(self.paths.validation))
            save_png(self.paths.grid, grid)
            write_json(self.paths.metrics, report)
        return report


def measures_ridge_leads(scores: dict[str, float]) -> list[str]:
    """The measures among PCC, MSE and SSIM on which ridge ("*_ridge") beats the fMRI path ("*_fmri") in `scores`,
    each with both figures, e.g. "PCC 0.6830 < 0.7820"."""
    trailing = []
    for measure in ("pcc", "mse", "ssim"):
        ours, ridge = scores[f"{measure}_fmri"], scores[f"{measure}_ridge"]
        lower_is_better = measure in LOWER_IS_BETTER
        if (ours > ridge) if lower_is_better else (ours < ridge):
            trailing.append(f"{measure.upper()} {ours:.4f} {'>' if lower_is_better else '<'} {ridge:.4f}")
    return trailing


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
    origin: DataOrigin | None = None,
) -> tuple[RunPaths, dict[str, Any], dict[str, dict[str, float]]]:
    """Train in run folder `out` (continuing it with `resume`); return its paths, the final report and the
    wall time of each stage and of the report (also written to run_info.json, under `resumed` on a resume).

    `origin` says where `dataset` came from, so that eval.py and `load_run` can load it again (default: the
    file its source names, if any). With several processes every one calls this alike; only process 0 writes
    files and logs.
    """
    log = main_process_log(log)
    created = not Path(out).exists()
    paths = open_run_folder(out, resume, overwrite)
    if resume:
        saved = read_saved_config(paths)
        if resolve_image_size(config, dataset) != saved:
            log(f"note: --resume continues with the run's saved config {paths.config}")
        config = saved
    try:
        trainer = Trainer(config, dataset, paths, interrupt=interrupt, progress=progress, log=log, origin=origin)
        check_free_space(paths, trainer.checkpoint_arrays())
    except VaeganError:
        # A run that cannot start leaves no trace: not even the empty folder made for it.
        if created and is_main_process() and not any(paths.root.iterdir()):
            paths.root.rmdir()
        raise
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
