"""An honest reconstruction report of a trained run: the fMRI path side by side with baselines, on one split.

`evaluate_run` restores a checkpoint (the best by validation score unless a step is named), rebuilds the
run's splits from its config, reconstructs the chosen split's stimuli from fMRI, fits each requested
baseline on the fit trials only (every voxel, z-scored with fit-trial statistics as the model's were), and
scores every method with metrics.py at the stimulus' native resolution, pixels in [0, 1]. Everything is
computed before anything is written; then `write_report` fills a temporary folder and renames it into
place, and `log_to_tensorboard` adds the figures to the run's TensorBoard log.

Splits: "test" is the data set's standard test split; "val" the validation trials carved from the
training split (the best checkpoint is picked on them, so their figures are optimistic); "train" the fit
trials the networks and baselines learned from.

Files of the report folder:

- metrics.json, schema "vaegan_jax.eval/1" (non-finite numbers, e.g. the PCC of a constant image, are null):

      schema       "vaegan_jax.eval/1"
      created      ISO 8601 time (UTC);  vaegan_jax: the code's version
      checkpoint   {run: run folder, path: checkpoints/<step> folder, step, selected_by ("best validation
                    score" | "--step" | "checkpoint folder"), stage, epoch_in_stage, val_score (null if none),
                    inference: {samples, temperature} the model decoded with, inference_as_trained: bool}
      data         {name, source, fingerprint, n_voxels, image_size: of the data evaluated on,
                    trained_on: fingerprint of the training data, same_as_training: bool}
      protocol     {split, split_description, n_trials, trial_indices: [int] (the source file's numbering,
                    the order of every per-image list), resolution: [H, W], data_range: [0.0, 1.0],
                    ssim_windows: {measure: description}, n_ways: [n...] (those <= n_trials),
                    identification: description, aggregate: description, n_boot, bootstrap_seed,
                    voxels: description (how many the model read, what the baselines read),
                    baselines_fitted_on: {split: "train", n_trials, n_extra_images: image-only extras a
                    baseline may use, as many as the model's stage I had}}
      measures     [names in table order]: pcc, mse, ssim, ssim_gaussian11, ident_<n>way for each n in n_ways
      methods      {name: {kind: "model" | "baseline", decoder: description, fitted: {name_: number} (a
                    baseline's fitted scalars, e.g. ridge alpha_), aggregate: {measure: {mean, sd,
                    ci95: [low, high], n}}, per_image: {measure: [value per trial]}}}; "model" first

- reconstructions.npz: stimuli (N, H, W) float32, trial_indices (N,) int64, methods (M,) str, and for each
  method rec_<method> (N, H, W) float32, all in [0, 1].
- reconstructions.png: one column per trial; rows: the stimulus, then each method in `methods` order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tensorboardX import SummaryWriter

import vaegan_jax
from vaegan_jax import config as config_lib
from vaegan_jax import metrics as metrics_lib
from vaegan_jax.baselines import Decoder, LatentRidgeDecoder, MeanImageDecoder, RidgeDecoder
from vaegan_jax.checkpoints import NO_SCORE, CheckpointStore, checkpoint_tree
from vaegan_jax.config import Config
from vaegan_jax.data import load_dataset, load_synthetic
from vaegan_jax.data.dataset import Dataset, Trials
from vaegan_jax.data.prepare import PreparedData, prepare, selection_size, to_native_images
from vaegan_jax.errors import CheckpointError, ConfigError, DataError
from vaegan_jax.images import labelled_grid, save_png
from vaegan_jax.sharding import MEMBERS, fetch, is_main_process, place_members, replicate, training_mesh
from vaegan_jax.steps import States, create_members, make_reconstruct, member_keys
from vaegan_jax.training import RunPaths, data_meta

SCHEMA = "vaegan_jax.eval/1"
MODEL = "model"
# CLI name -> decoder factory: adding a baseline is one line here.
BASELINES: dict[str, Callable[[], Decoder]] = {
    "ridge": RidgeDecoder,
    "mean": MeanImageDecoder,
    "latent-ridge": LatentRidgeDecoder,
}
DEFAULT_BASELINES = ("ridge", "mean")
# What the baselines read: every voxel (as they are defined), or the model's selection (a like-for-like comparison).
BASELINE_VOXELS = ("all", "selected")
SPLITS = {
    "test": "the data set's standard test split",
    "val": "validation trials carved from the training split; the best checkpoint is picked on them (optimistic)",
    "train": "the fit trials the networks and the baselines learned from (in-sample)",
}
N_WAYS = (2, 5, 10)
N_BOOT = 1000
BOOTSTRAP_SEED = 0
TABLE_COLUMNS = (
    ("PCC", "pcc"), ("MSE", "mse"), ("SSIM", "ssim"), ("SSIM-g11", "ssim_gaussian11"),
    ("2-way", "ident_2way"), ("5-way", "ident_5way"), ("10-way", "ident_10way"),
)
_SYNTHETIC_SOURCE = "embedded synthetic"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint: where it lives, how it was chosen, its metadata, config and train states."""

    run: Path
    path: Path
    step: int
    selected_by: str
    meta: dict[str, Any]
    config: Config
    states: States


@dataclasses.dataclass(frozen=True)
class Report:
    """An evaluation computed in memory: metrics.json's content, the reconstructions and the grid."""

    metrics: dict[str, Any]
    arrays: dict[str, np.ndarray]
    grid: np.ndarray


def parse_baselines(text: str) -> tuple[str, ...]:
    """Baseline names from a comma-separated list (empty: none), in order, without repeats."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    return names


def locate_checkpoint(path: str | os.PathLike, step: int | None) -> tuple[Path, Path, int | None, str]:
    """Run folder, checkpoints folder, step (None: the best) and how it was chosen, from any of the three paths."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a folder; expected a run folder, its checkpoints/ or a checkpoints/<step>")
    if (path / "checkpoints").is_dir():
        return path, path / "checkpoints", step, "best validation score" if step is None else "--step"
    if path.name.isdigit():
        if step is not None and step != int(path.name):
            raise ConfigError(f"--step {step} contradicts --ckpt {path} (checkpoint {path.name})")
        return path.parent.parent, path.parent, int(path.name), "checkpoint folder"
    return path.parent, path, step, "best validation score" if step is None else "--step"


def _checkpoint_template(config: Config, n_voxels: int) -> dict[str, Any]:
    """Zeros shaped like what Trainer.checkpoint_arrays saves, without initialising any network.

    They lie on the run's mesh, as in training, so the restore puts each process's part on its devices.
    """
    zeros = jnp.zeros(n_voxels, jnp.float32)
    n_inputs = selection_size(n_voxels, config.train.selected_voxels)
    shapes = jax.eval_shape(
        lambda: checkpoint_tree(create_members(config, n_inputs, member_keys(config)), zeros, zeros, member_keys(config))
    )
    mesh = training_mesh(config.train.ensemble, config.train.batch_size)
    members, shared = NamedSharding(mesh, PartitionSpec(MEMBERS)), NamedSharding(mesh, PartitionSpec())
    shardings = {name: jax.tree.map(lambda _: shared if name == "scaler" else members, tree)
                 for name, tree in shapes.items()}
    return jax.jit(lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes), out_shardings=shardings)()


@contextlib.contextmanager
def _absl_level(level: int) -> Iterator[None]:
    logger = logging.getLogger("absl")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


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
            raise CheckpointError(
                f"{directory}: no complete checkpoint {step}; available: {', '.join(map(str, steps))}"
            )
        where = directory / str(step)
        meta = store.read_meta(step)
        for key in ("config", "data"):
            if not isinstance(meta.get(key), dict):
                raise CheckpointError(f"{where}: the checkpoint records no {key}")
        try:
            config = config_lib.from_dict(meta["config"])
            config_lib.validate(config)
        except (ConfigError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{where}: the checkpoint's config is not valid ({err})") from None
        arrays, _ = store.restore(step, _checkpoint_template(config, meta["data"]["n_voxels"]))
    finally:
        store.close()
    return Checkpoint(run, where, step, selected_by, meta, config, arrays["states"])


def with_inference(checkpoint: Checkpoint, assignments: list[str]) -> Checkpoint:
    """The checkpoint decoding as `inference.field=value` assignments say (how the fMRI path turns a posterior into an image)."""
    for assignment in assignments:
        if not assignment.strip().startswith("inference."):
            raise ConfigError(f"--set {assignment!r}: eval.py changes only inference.* (samples, temperature); "
                              "the rest of the config is the trained model's")
    return dataclasses.replace(checkpoint, config=config_lib.override(checkpoint.config, assignments))


def load_training_data(recorded: dict[str, Any]) -> Dataset:
    """The data set a checkpoint records it was trained on: the embedded synthetic set or a file."""
    source = str(recorded.get("source", ""))
    if source.startswith(_SYNTHETIC_SOURCE):
        match = re.search(r"seed (\d+)", source)
        if match is None:
            raise CheckpointError(f"cannot tell the synthetic data seed from the recorded source {source!r}")
        return load_synthetic(int(match.group(1)))
    if not Path(source).is_file():
        raise DataError(f"{source}: the data the run was trained on is not there; pass --data PATH")
    return load_dataset(source)


def prepare_for_checkpoint(
    checkpoint: Checkpoint, dataset: Dataset, warn: Callable[[str], None]
) -> PreparedData:
    """The run's fit/val/test splits of `dataset`, refusing data the model cannot read and warning on other data."""
    trained = checkpoint.meta["data"]
    if dataset.n_voxels != trained["n_voxels"]:
        raise DataError(
            f"{dataset.source}: {dataset.n_voxels} voxels, but {checkpoint.path} was trained on {trained['n_voxels']}"
        )
    train = checkpoint.config.train
    data = prepare(dataset, train.val_trials, train.split_seed, train.selected_voxels, train.shipped_prior)
    if dataset.fingerprint != trained["fingerprint"]:
        warn(
            f"warning: evaluating on data {dataset.fingerprint} ({dataset.source}), but {checkpoint.path} "
            f"was trained on data {trained['fingerprint']} ({trained['source']})"
        )
        return data
    recorded = checkpoint.meta.get("split", {})
    rebuilt = {name: (f"{name} trials", getattr(data, name).indices) for name in ("fit", "val", "test")}
    rebuilt["voxels"] = ("selected voxels", data.voxel_selection)
    for name, (what, indices) in rebuilt.items():
        # Same data, another split or selection: "train", "val" and the model's inputs would silently change.
        if name in recorded and indices.tolist() != recorded[name]:
            raise CheckpointError(
                f"{checkpoint.path}: the {what} rebuilt from the config differ from the ones recorded in "
                "the checkpoint; it was written by another version of vaegan_jax"
            )
    return data


def split_trials(data: PreparedData, split: str) -> Trials:
    """The trials of a split name: "train" is the fit trials, "val" the validation ones, "test" the test ones."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    trials = data.fit if split == "train" else getattr(data, split)
    if len(trials) == 0:
        raise ConfigError(f"the run has no {split} trials (train.val_trials is 0)")
    return trials


def member_reconstructions(checkpoint: Checkpoint, data: PreparedData, trials: Trials) -> np.ndarray:
    """Each member's deterministic fMRI-path reconstructions of `trials` of `data` (member, trial, H, W), in [0, 1]."""
    reconstruct = jax.jit(jax.vmap(make_reconstruct(checkpoint.config, "cognitive_encoder"), in_axes=(0, None, 0)))
    config = checkpoint.config
    mesh = training_mesh(config.train.ensemble, config.train.batch_size)
    voxels, keys = replicate(jnp.asarray(data.model_voxels(trials)), mesh), place_members(member_keys(config), mesh)
    images = fetch(reconstruct(checkpoint.states, voxels, keys))
    return np.stack([to_native_images(member, trials.images.shape[1]) for member in images])


def model_reconstructions(checkpoint: Checkpoint, data: PreparedData, trials: Trials) -> dict[str, np.ndarray]:
    """The model's reconstructions (its members' average) and, for an ensemble, each member's by name."""
    members = member_reconstructions(checkpoint, data, trials)
    named = {MODEL: members.mean(axis=0)}
    if len(members) > 1:
        seed = checkpoint.config.train.seed
        named.update({member_name(seed + k): images for k, images in enumerate(members)})
    return named


def member_name(seed: int) -> str:
    """The method name of one ensemble member in a report."""
    return f"{MODEL}-seed{seed}"


def _fitted_scalars(decoder: Decoder) -> dict[str, float]:
    # scikit-learn's convention: attributes ending in "_" are learned; scalars of them are worth recording.
    return {k: float(v) for k, v in vars(decoder).items() if k.endswith("_") and isinstance(v, (int, float))}


def comparison_grid(stimuli: np.ndarray, reconstructions: dict[str, np.ndarray]) -> np.ndarray:
    """A labelled grid, one column per trial: the stimuli, then each method's reconstructions."""
    labels = ["stimulus"] + [f"{name} (fMRI)" if name == MODEL else name for name in reconstructions]
    return labelled_grid([stimuli, *reconstructions.values()], labels)


def score_methods(
    stimuli: np.ndarray, reconstructions: dict[str, np.ndarray]
) -> tuple[list[str], dict[str, dict[str, dict[str, Any]]]]:
    """The measure names and, per method, the per-image values and their aggregates (metrics.py)."""
    scored = {}
    for name, images in reconstructions.items():
        per_image = metrics_lib.reconstruction_metrics(stimuli, images, N_WAYS)
        scored[name] = {
            "aggregate": {m: metrics_lib.summarize(v, N_BOOT, BOOTSTRAP_SEED) for m, v in per_image.items()},
            "per_image": {m: v.tolist() for m, v in per_image.items()},
        }
    return list(next(iter(scored.values()))["per_image"]), scored


def _json_safe(value: Any) -> Any:
    """`value` with tuples as lists and non-finite floats as None, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(
    checkpoint: Checkpoint,
    dataset: Dataset,
    data: PreparedData,
    split: str,
    baselines: tuple[str, ...],
    baseline_voxels: str = "all",
) -> Report:
    """Reconstruct a split with the model and each baseline and score them all; nothing is written.

    The baselines read every voxel, or with `baseline_voxels="selected"` the model's selection.
    """
    if baseline_voxels not in BASELINE_VOXELS:
        raise ConfigError(f"unknown baseline voxels {baseline_voxels!r}; choose one of {', '.join(BASELINE_VOXELS)}")
    trials = split_trials(data, split)
    reconstructions = model_reconstructions(checkpoint, data, trials)
    # Baselines may use the image-only extras exactly when the model's stage I did.
    extras = data.extra_images if checkpoint.config.train.use_extra_images else None
    read = data.model_voxels if baseline_voxels == "selected" else (lambda t: t.voxels)
    decoders = {name: BASELINES[name]().fit(read(data.fit), data.fit.images, extras) for name in baselines}
    reconstructions.update({name: d.predict(read(trials)).astype(np.float32) for name, d in decoders.items()})
    measures, scored = score_methods(trials.images, reconstructions)
    n_members = checkpoint.config.train.ensemble
    described = {MODEL: {
        "kind": "model", "fitted": {},
        "decoder": "D-VAE/GAN fMRI path" + (f", average of {n_members} members' reconstructions" if n_members > 1 else ""),
    }}
    for k in range(n_members if n_members > 1 else 0):
        seed = checkpoint.config.train.seed + k
        described[member_name(seed)] = {"kind": "ensemble member", "decoder": f"D-VAE/GAN fMRI path, seed {seed}", "fitted": {}}
    for name, decoder in decoders.items():
        described[name] = {"kind": "baseline", "decoder": decoder.name, "fitted": _fitted_scalars(decoder)}
    meta = checkpoint.meta
    metrics = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "vaegan_jax": vaegan_jax.__version__,
        "checkpoint": {
            "run": str(checkpoint.run), "path": str(checkpoint.path), "step": checkpoint.step,
            "selected_by": checkpoint.selected_by, "stage": meta["stage"], "epoch_in_stage": meta["epoch_in_stage"],
            "val_score": None if meta["val_score"] == NO_SCORE else meta["val_score"],
            "inference": {
                "samples": checkpoint.config.inference.samples, "temperature": checkpoint.config.inference.temperature
            },
            "inference_as_trained": checkpoint.config.inference == config_lib.from_dict(meta["config"]).inference,
        },
        "data": {
            **data_meta(dataset), "trained_on": meta["data"]["fingerprint"],
            "same_as_training": dataset.fingerprint == meta["data"]["fingerprint"],
        },
        "protocol": {
            "split": split,
            "split_description": SPLITS[split],
            "n_trials": len(trials),
            "trial_indices": trials.indices.tolist(),
            "resolution": list(trials.images.shape[1:]),
            "data_range": [0.0, 1.0],
            "ssim_windows": {
                "ssim": "7x7 uniform window, sample covariance (scikit-image defaults), data_range 1",
                "ssim_gaussian11": "11x11 Gaussian window, sigma 1.5, population covariance (Wang et al. 2004), "
                "data_range 1",
            },
            "n_ways": [n for n in N_WAYS if n <= len(trials)],
            "identification": "n-way: share of the sets of n-1 other stimuli of the split that the reconstruction "
            "correlates with less (strictly) than with its own stimulus, averaged exactly over all such sets",
            "aggregate": "mean, sample sd (ddof 1) and 95% percentile-bootstrap interval of the mean over trials",
            "n_boot": N_BOOT,
            "bootstrap_seed": BOOTSTRAP_SEED,
            "voxels": "z-scored per voxel with the statistics of the fit trials; the model reads "
            f"{len(data.voxel_selection)} of {dataset.n_voxels} (train.selected_voxels, chosen on the fit trials), "
            + ("the baselines the same ones" if baseline_voxels == "selected" else "the baselines all"),
            "baselines_fitted_on": {
                "split": "train", "n_trials": len(data.fit), "n_extra_images": 0 if extras is None else len(extras),
            },
        },
        "measures": measures,
        "methods": {name: {**described[name], **scored[name]} for name in reconstructions},
    }
    arrays = {
        "stimuli": trials.images.astype(np.float32),
        "trial_indices": trials.indices.astype(np.int64),
        "methods": np.array(list(reconstructions)),
        **{f"rec_{name}": images for name, images in reconstructions.items()},
    }
    return Report(_json_safe(metrics), arrays, comparison_grid(trials.images, reconstructions))


def default_output(checkpoint: Checkpoint, split: str) -> Path:
    """<run>/eval-<split>-step<N>."""
    return checkpoint.run / f"eval-{split}-step{checkpoint.step}"


def open_output(out: Path) -> Path:
    """A fresh temporary folder beside `out` to write into, after checking `out` may be replaced."""
    if out.exists():
        replaceable = out.is_dir() and (not any(out.iterdir()) or _is_report_folder(out))
        if not replaceable:
            raise ConfigError(f"{out}: exists and is not an earlier evaluation folder; choose another --out")
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        # mkdir, not mkdtemp: the report folder gets the usual permissions, not 0700.
        tmp.mkdir(parents=True)
        return tmp
    except OSError as err:
        raise ConfigError(
            f"{out}: output folder is not writable ({err.strerror or err}); choose another --out"
        ) from None


def _is_report_folder(folder: Path) -> bool:
    try:
        return json.loads((folder / "metrics.json").read_text()).get("schema") == SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def write_report(report: Report, tmp: Path, out: Path) -> None:
    """Write the report's files into `tmp`, then put `tmp` in place of `out` (an earlier report there goes)."""
    try:
        (tmp / "metrics.json").write_text(json.dumps(report.metrics, indent=2, allow_nan=False))
        np.savez_compressed(tmp / "reconstructions.npz", **report.arrays)
        save_png(tmp / "reconstructions.png", report.grid)
        if out.exists():
            old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except OSError:
                os.replace(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as err:
        raise ConfigError(f"{out}: cannot write the evaluation ({err.strerror or err})") from None


def log_to_tensorboard(report: Report, run: Path, warn: Callable[[str], None]) -> None:
    """Add the aggregate means (eval/<split>/<measure>/<method>) and the grid to the run's TensorBoard log."""
    metrics = report.metrics
    split, step = metrics["protocol"]["split"], metrics["checkpoint"]["step"]
    try:
        with SummaryWriter(str(RunPaths(run).tensorboard)) as writer:
            for method, values in metrics["methods"].items():
                for measure, summary in values["aggregate"].items():
                    if summary["mean"] is not None:
                        writer.add_scalar(f"eval/{split}/{measure}/{method}", summary["mean"], step)
            writer.add_image(f"eval/{split}/reconstructions", report.grid[..., None], step, dataformats="HWC")
    except OSError as err:
        warn(f"warning: could not log to {RunPaths(run).tensorboard} ({err.strerror or err})")


def _quiet(message: str) -> None:
    """Where the warnings of processes other than 0 go."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def evaluate_run(
    ckpt: str | os.PathLike,
    data_path: str | os.PathLike | None = None,
    split: str = "test",
    out: str | os.PathLike | None = None,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    step: int | None = None,
    warn: Callable[[str], None] = _stderr,
    baseline_voxels: str = "all",
    inference: list[str] | None = None,
) -> tuple[Path, Report]:
    """Evaluate a run's checkpoint on a split against baselines; write the report folder; return it and the report.

    `inference` assignments (e.g. ["inference.temperature=0.5"]) change how the model decodes, nothing else.
    """
    warn = warn if is_main_process() else _quiet
    checkpoint = with_inference(load_checkpoint(ckpt, step), inference or [])
    dataset = load_dataset(data_path) if data_path is not None else load_training_data(checkpoint.meta["data"])
    data = prepare_for_checkpoint(checkpoint, dataset, warn)
    split_trials(data, split)  # a bad or empty split fails here, before any folder is made
    out = Path(out).absolute() if out is not None else default_output(checkpoint, split)
    if not is_main_process():
        # Every process takes part in the restore and the reconstructions; process 0 alone writes.
        return out, evaluate(checkpoint, dataset, data, split, baselines, baseline_voxels)
    tmp = open_output(out)
    try:
        report = evaluate(checkpoint, dataset, data, split, baselines, baseline_voxels)
        write_report(report, tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log_to_tensorboard(report, checkpoint.run, warn)
    return out, report


def _cell(summary: dict[str, Any] | None, measure: str) -> str:
    if summary is None:
        return "-"
    digits = 4 if measure == "mse" else 3
    mean, sd = (f"{v:.{digits}f}" if v is not None else "nan" for v in (summary["mean"], summary["sd"]))
    return f"{mean} ± {sd}"


def format_table(metrics: dict[str, Any]) -> str:
    """The report as a text table: a row per method, mean ± sd over the split's trials per measure."""
    protocol, ckpt = metrics["protocol"], metrics["checkpoint"]
    height, width = protocol["resolution"]
    rows = [["method", *(title for title, _ in TABLE_COLUMNS)]]
    for name, values in metrics["methods"].items():
        rows.append([name, *(_cell(values["aggregate"].get(m), m) for _, m in TABLE_COLUMNS)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"split {protocol['split']}: {protocol['n_trials']} trials at {height}x{width}, pixels in [0, 1]; "
        f"checkpoint {ckpt['path']} (stage {ckpt['stage']}, chosen by {ckpt['selected_by']})",
        *("  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]) for row in rows),
        "mean ± sd over trials; 95% bootstrap intervals and per-image values in metrics.json",
    ]
    if protocol["split"] != "test":
        lines.append(f"note: {protocol['split_description']}")
    return "\n".join(lines)
