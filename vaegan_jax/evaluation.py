"""eval.py's report of a trained run: the fMRI path side by side with baselines on one split, and its folder.

`evaluate` reconstructs the split with the model (reconstruction.py, as training validated it) and with each
baseline fitted on the fit trials only, and scores every method (metrics.py); nothing is written. Then
`write_report` fills a temporary folder and renames it into place, and `log_to_tensorboard` adds the figures
to the run's log. What the folder holds, metrics.json's schema included: docs/eval-report.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tensorboardX import SummaryWriter

import vaegan_jax
from vaegan_jax import metrics as metrics_lib
from vaegan_jax.baselines import Decoder, LatentRidgeDecoder, MeanImageDecoder, RidgeDecoder
from vaegan_jax.data import load_dataset
from vaegan_jax.data.dataset import Dataset, Trials
from vaegan_jax.data.prepare import PreparedData
from vaegan_jax.config import describe_member
from vaegan_jax.errors import ConfigError
from vaegan_jax.images import labelled_grid, save_png
from vaegan_jax.reconstruction import per_image_scores
from vaegan_jax.runs import RunPaths, data_meta
from vaegan_jax.sharding import is_main_process
from vaegan_jax.trained_run import TrainedRun, load_run
from vaegan_jax.writer import main_process_log, to_stderr

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
# The protocol's fixed descriptions, as metrics.json states them.
PROTOCOL = {
    "ssim_windows": {
        "ssim": "7x7 uniform window, sample covariance (scikit-image defaults), data_range 1",
        "ssim_gaussian11": "11x11 Gaussian window, sigma 1.5, population covariance (Wang et al. 2004), data_range 1",
    },
    "identification": "n-way: share of the sets of n-1 other stimuli of the split that the reconstruction "
    "correlates with less (strictly) than with its own stimulus, averaged exactly over all such sets",
    "aggregate": "mean, sample sd (ddof 1) and 95% percentile-bootstrap interval of the mean over trials",
}
TABLE_COLUMNS = (
    ("PCC", "pcc"), ("MSE", "mse"), ("SSIM", "ssim"), ("SSIM-g11", "ssim_gaussian11"),
    ("2-way", "ident_2way"), ("5-way", "ident_5way"), ("10-way", "ident_10way"),
)


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


def split_trials(data: PreparedData, split: str) -> Trials:
    """The trials of a split name: "train" is the fit trials, "val" the validation ones, "test" the test ones."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    trials = data.fit if split == "train" else getattr(data, split)
    if len(trials) == 0:
        raise ConfigError(f"the run has no {split} trials (train.val_trials is 0)")
    return trials


def member_name(origin: dict[str, float]) -> str:
    """The method name of one ensemble member in a report, from its origin (`config.member_origins`)."""
    return f"{MODEL}-seed{origin['seed']}" + (f"-epoch{origin['stage1_epoch']}" if "stage1_epoch" in origin else "") + (
        f"-kl{origin['kl_weight']:g}" if "kl_weight" in origin else "")


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
    scored = {
        name: {
            "aggregate": {m: metrics_lib.summarize(v, N_BOOT, BOOTSTRAP_SEED) for m, v in per_image.items()},
            "per_image": {m: v.tolist() for m, v in per_image.items()},
        }
        for name, per_image in per_image_scores(stimuli, reconstructions, N_WAYS).items()
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


def model_reconstructions(run: TrainedRun, data: PreparedData, trials: Trials) -> dict[str, np.ndarray]:
    """The model's reconstructions (its members' average) and, for an ensemble, each member's by name."""
    members = run.decode(data.model_voxels(trials))
    named = {MODEL: members.mean(axis=0)}
    if len(members) > 1:
        named.update({member_name(origin): images for origin, images in zip(run.member_origins, members)})
    return named


def describe_methods(run: TrainedRun, decoders: dict[str, Decoder]) -> dict[str, dict[str, Any]]:
    """Each method's kind, decoder description and fitted scalars, for metrics.json."""
    origins = run.member_origins
    described = {MODEL: {
        "kind": "model", "fitted": {},
        "decoder": "D-VAE/GAN fMRI path" + (f", average of {len(origins)} members' reconstructions" if len(origins) > 1 else ""),
    }}
    for origin in origins if len(origins) > 1 else []:
        described[member_name(origin)] = {
            "kind": "ensemble member", "decoder": f"D-VAE/GAN fMRI path, {describe_member(origin)}", "fitted": {},
        }
    for name, decoder in decoders.items():
        described[name] = {"kind": "baseline", "decoder": decoder.name, "fitted": _fitted_scalars(decoder)}
    return described


def checkpoint_record(run: TrainedRun) -> dict[str, Any]:
    """metrics.json's `checkpoint`: which checkpoint, chosen how, decoding how."""
    checkpoint, meta, inference = run.checkpoint, run.meta, run.config.inference
    return {
        "run": str(checkpoint.run), "path": str(checkpoint.path), "step": checkpoint.step,
        "selected_by": checkpoint.selected_by, "stage": meta.stage, "epoch_in_stage": meta.epoch_in_stage,
        "val_score": meta.val_score,
        "inference": {"samples": inference.samples_in_use, "temperature": inference.temperature_in_use,
                      "black_level": inference.black_level_in_use},
        "inference_as_trained": inference == meta.config.inference,
    }


def protocol_record(
    dataset: Dataset, data: PreparedData, split: str, trials: Trials, baseline_voxels: str,
    n_extra_images: int,
) -> dict[str, Any]:
    """metrics.json's `protocol`: what was evaluated and how, in figures and in the words of PROTOCOL."""
    voxels = (f"z-scored per voxel with the statistics of the fit trials; the model reads {len(data.voxel_selection)} "
              f"of {dataset.n_voxels} (train.selected_voxels, chosen on the fit trials), "
              + ("the baselines the same ones" if baseline_voxels == "selected" else "the baselines all"))
    return {
        "split": split,
        "split_description": SPLITS[split],
        "n_trials": len(trials),
        "trial_indices": trials.indices.tolist(),
        "resolution": list(trials.images.shape[1:]),
        "data_range": [0.0, 1.0],
        "ssim_windows": PROTOCOL["ssim_windows"],
        "n_ways": [n for n in N_WAYS if n <= len(trials)],
        "identification": PROTOCOL["identification"],
        "aggregate": PROTOCOL["aggregate"],
        "n_boot": N_BOOT,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "voxels": voxels,
        "baselines_fitted_on": {"split": "train", "n_trials": len(data.fit), "n_extra_images": n_extra_images},
    }


def evaluate(
    run: TrainedRun,
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
    reconstructions = model_reconstructions(run, data, trials)
    # Baselines may use the image-only extras exactly when the model's stage I did.
    extras = data.extra_images if run.config.train.use_extra_images else None
    read = data.model_voxels if baseline_voxels == "selected" else (lambda t: t.voxels)
    decoders = {name: BASELINES[name]().fit(read(data.fit), data.fit.images, extras) for name in baselines}
    reconstructions.update({name: d.predict(read(trials)).astype(np.float32) for name, d in decoders.items()})
    measures, scored = score_methods(trials.images, reconstructions)
    described = describe_methods(run, decoders)
    trained_on = run.meta.data.fingerprint
    metrics = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "vaegan_jax": vaegan_jax.__version__,
        "checkpoint": checkpoint_record(run),
        "data": {**data_meta(dataset), "trained_on": trained_on, "same_as_training": dataset.fingerprint == trained_on},
        "protocol": protocol_record(dataset, data, split, trials, baseline_voxels,
                                    0 if extras is None else len(extras)),
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


def default_output(run: TrainedRun, split: str) -> Path:
    """<run>/eval-<split>-step<N>."""
    return run.checkpoint.run / f"eval-{split}-step{run.checkpoint.step}"


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


def evaluate_run(
    ckpt: str | os.PathLike,
    data_path: str | os.PathLike | None = None,
    split: str = "test",
    out: str | os.PathLike | None = None,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    step: int | None = None,
    warn: Callable[[str], None] = to_stderr,
    baseline_voxels: str = "all",
    inference: list[str] | None = None,
) -> tuple[Path, Report]:
    """Evaluate a run's checkpoint on a split against baselines; write the report folder; return it and the report.

    `inference` assignments (e.g. ["inference.temperature=0.5"]) change how the model decodes, nothing else.
    """
    warn = main_process_log(warn)
    run = load_run(ckpt, step, inference or [])
    dataset = load_dataset(data_path) if data_path is not None else run.training_data()
    data = run.prepare(dataset, warn)
    try:
        split_trials(data, split)  # a bad or empty split fails here, before any folder is made
    except ConfigError as err:
        raise ConfigError(f"{run.checkpoint.run}: {err}") from None
    out = Path(out).absolute() if out is not None else default_output(run, split)
    if not is_main_process():
        # Every process takes part in the restore and the reconstructions; process 0 alone writes.
        return out, evaluate(run, dataset, data, split, baselines, baseline_voxels)
    tmp = open_output(out)
    try:
        report = evaluate(run, dataset, data, split, baselines, baseline_voxels)
        write_report(report, tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log_to_tensorboard(report, run.checkpoint.run, warn)
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
