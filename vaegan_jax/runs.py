"""A run folder: where each file lives, opening one without clobbering another run, and its provenance."""

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
from pathlib import Path
from typing import Any

import jax

import vaegan_jax
from vaegan_jax import choices, history
from vaegan_jax import config as config_lib
from vaegan_jax.config import Config, prior_variants, snapshot_epochs
from vaegan_jax.data.dataset import Dataset
from vaegan_jax.data.prepare import PreparedData
from vaegan_jax.errors import CheckpointError, ConfigError
from vaegan_jax.reconstruction import SUMMARY_METRICS
from vaegan_jax.sharding import barrier

RECORDED_PACKAGES = (
    "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "scikit-image", "scikit-learn",
    "tensorboardX",
)


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where a run keeps its files."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        """The orbax checkpoints, one folder per step (checkpoints.py)."""
        return self.root / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        """The TensorBoard event files of training and of eval.py."""
        return self.root / "tensorboard"

    @property
    def config(self) -> Path:
        """The config the run trains with (rewritten once the run has made its choices)."""
        return self.root / "config.json"

    @property
    def run_info(self) -> Path:
        """Provenance: command, code and package versions, devices, data, timing."""
        return self.root / "run_info.json"

    @property
    def metrics(self) -> Path:
        """The final report of the best checkpoint."""
        return self.root / "metrics.json"

    @property
    def validation(self) -> Path:
        """Every validation's scores, a row each (history.py)."""
        return self.root / "validation.csv"

    @property
    def grid(self) -> Path:
        """The final report's test reconstructions as a PNG."""
        return self.root / "reconstructions.png"

    @property
    def choices(self) -> Path:
        """The settings the run chose by cross-validation (choices.py), when it chose any."""
        return self.root / "choices.json"


def data_meta(dataset: Dataset) -> dict[str, Any]:
    """How the run's provenance and eval.py's report describe a data set."""
    return {
        "name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint,
        "n_voxels": dataset.n_voxels, "image_size": dataset.image_size,
    }


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
        "host": host_cpu(),
        "data": data_meta(dataset),
        "preset": config.preset,
    }


# The vector extensions XLA's CPU compiler may use: with other ones a step sums in another order, so the same
# seed trains another network (float rounding, which a GAN amplifies), and runs at another speed.
VECTOR_EXTENSIONS = ("sse4", "avx", "fma", "amx", "neon", "asimd", "sve")


def host_cpu() -> dict[str, Any]:
    """The host's CPU model, core count and vector extensions (from /proc/cpuinfo where there is one)."""
    host = {"model": platform.processor() or platform.machine(), "cores": os.cpu_count(), "vector_extensions": []}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return host
    fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}
    model = fields.get("model name") or fields.get("Model", "")
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return {**host, "model": model or host["model"],
            "vector_extensions": sorted(flag for flag in flags if flag.startswith(VECTOR_EXTENSIONS))}


def _git(*args: str) -> str | None:
    """Output of a git command run beside this file, or None outside a git checkout."""
    try:
        done = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def foreign_entries(paths: RunPaths) -> list[str]:
    """The names in a run folder that neither a run nor eval.py (its `eval*` report folders) writes there."""
    own = {path.name for path in (paths.checkpoints, paths.tensorboard, paths.config, paths.run_info, paths.metrics,
                                  paths.validation, paths.grid, paths.choices)}
    return sorted(entry.name for entry in paths.root.iterdir()
                  if entry.name not in own and not entry.name.startswith(("eval", ".write_probe"))
                  and not entry.name.endswith(".tmp"))


def open_run_folder(out: str | os.PathLike, resume: bool, overwrite: bool) -> RunPaths:
    """Check that a run folder can be used without clobbering an earlier run, and that it is writable.

    Creates the folder when missing but deletes nothing: with `overwrite`, `training.run_training` clears
    the earlier run only once the new one has been set up without error.
    """
    paths = RunPaths(Path(out))
    if paths.root.exists() and not paths.root.is_dir():
        raise ConfigError(f"{paths.root}: exists and is not a folder")
    exists = paths.root.is_dir() and any(paths.root.iterdir())
    if exists and not (resume or overwrite):
        raise ConfigError(f"{paths.root}: run folder exists; pass --resume to continue it or --overwrite to replace it")
    if resume and not paths.config.exists():
        raise CheckpointError(f"{paths.root}: nothing to resume (no config.json)")
    if exists and overwrite and not resume:
        if not (paths.config.exists() or paths.checkpoints.is_dir()):
            raise ConfigError(f"{paths.root}: not a run folder (no config.json or checkpoints); --overwrite only "
                              "replaces runs")
        foreign = foreign_entries(paths)
        if foreign:
            raise ConfigError(f"{paths.root}: holds files no run writes ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); --overwrite only replaces runs")
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


def describe_run(config: Config, dataset: Dataset, data: PreparedData, layout: str, paths: RunPaths) -> str:
    """A few lines on what a run is about to do: data, split, prior, model, members and devices, folder."""
    extra = 0 if data.extra_images is None or not config.train.use_extra_images else len(data.extra_images)
    reads = f"{len(data.voxel_selection)} of {dataset.n_voxels}"
    if config.train.selected_voxels == config_lib.AUTO:
        reads = "the voxels that cross-validation on the fit trials chooses after stage I (choices.json)"
    return "\n".join([
        f"data     {dataset.summary()}",
        f"split    fit {len(data.fit)} / val {len(data.val)} / test {len(data.test)} trials "
        f"(+{extra} image-only for stage I); voxels z-scored with fit-trial statistics, the cognitive "
        f"encoder reads {reads}",
        f"prior    stage I's image-only images: {data.extra_source if extra else 'none'}",
        f"model    preset {config.preset}: {config.model.image_size}x{config.model.image_size} images, "
        f"latent {config.model.latent_dim}, batch {config.train.batch_size}, epochs I/II/III {config.train.epochs}"
        + (f", stage I hands on its image path's weights averaged over its steps (decay {config.train.weight_average:g})"
           if config.train.weight_average > 0 else "")
        + (f", stage I distorts each image elastically at probability {config.train.elastic_augment:g}"
           if config.train.elastic_augment > 0 else "")
        + (f", stage I trains a variant for each KL weight {', '.join(f'{w:g}' for w in prior_variants(config, 1))} "
           "side by side, of which cross-validation on the fit trials keeps one" if prior_variants(config, 1) else ""),
        f"members  {config.train.ensemble} (seeds {config.train.seed}..{config.train.seed + config.train.ensemble - 1})"
        + (f" x {len(prior_variants(config, 1))} KL variants in stage I" if prior_variants(config, 1) else "")
        + f"{_snapshot_members(config)} {layout}: {', '.join(str(d) for d in jax.devices())}",
        f"run      {paths.root}",
    ])


def describe_result(paths: RunPaths, report: dict[str, Any], timing: dict[str, dict[str, float]]) -> str:
    """What train.py prints when a run ends: its choices, the kept checkpoint's figures, each stage's validations,
    the time each part took and where everything went."""
    lines = []
    if paths.choices.exists():
        lines += ["", f"chosen       {choices.summarize(json.loads(paths.choices.read_text()))} "
                      f"(cross-validated on the fit trials: {paths.choices})"]
    lines += ["", f"best checkpoint: step {report['checkpoint_step']} (stage {report['stage']}, epoch "
                  f"{report['epoch_in_stage']}), chosen by validation PCC",
              f"{'split':6} {'path':6} {'PCC':>7} {'MSE':>7} {'SSIM':>7} {'2-way':>7}"]

    def row(split: str, path: str, figures: dict[str, float]) -> str:
        return f"{split:6} {path:6} " + " ".join(f"{figures[f'{m}_{path}']:7.4f}" for m in SUMMARY_METRICS)

    lines += [row(split, path, report[split]) for split in ("val", "test") for path in ("fmri", "image", "ridge")
              if f"pcc_{path}" in report[split]]
    lines += [row("test", "fmri", member["test"]) + f"   member {config_lib.describe_member(member)}"
              for member in report.get("members", [])]
    if report.get("validation"):
        lines += ["", f"validations  (each stage's; every one in {paths.validation})", *history.describe(report["validation"])]
    parts = [f"{name} {t['epochs']} epochs {t['seconds']:.1f} s ({t['seconds'] / t['epochs']:.3g} s/epoch, the loop's "
             f"own work {1000 * (t['seconds'] - t['waiting_seconds']) / t['epochs']:.0f} ms/epoch)"
             for name, t in timing.items() if t.get("epochs")]
    if "choices" in timing:
        parts.insert(1, f"choices {timing['choices']['seconds']:.1f} s")
    parts.append(f"final report {timing['final_report']['seconds']:.1f} s")
    lines += ["", f"time         {', '.join(parts)} (compilation included)",
              "", f"run folder   {paths.root}", f"checkpoints  {paths.checkpoints}",
              f"tensorboard  tensorboard --logdir {paths.tensorboard}", f"picture      {paths.grid}",
              f"metrics      {paths.metrics}", f"report       python eval.py --ckpt {paths.root}"]
    return "\n".join(lines)


def _snapshot_members(config: Config) -> str:
    """What the summary says of stage-I snapshots joining the members."""
    train = config.train
    if train.snapshots == 1:
        return ""
    if train.snapshots == -1:
        counts = "/".join(map(str, sorted(train.snapshot_candidates)))
        return f", each joined after stage I by its networks of the {counts} latest snapshots that cross-validation chooses,"
    return f", each joined after stage I by its networks of stage-I epochs {', '.join(map(str, snapshot_epochs(train)))},"


def check_free_space(paths: RunPaths, arrays: Any) -> None:
    """Fail before training when the disk cannot hold two checkpoints of these arrays."""
    need = 2 * sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(arrays) if hasattr(x, "dtype"))
    free = shutil.disk_usage(paths.root).free
    if free < need:
        raise ConfigError(f"{paths.root}: {free / 2**20:.0f} MiB free, checkpoints need about {need / 2**20:.0f} MiB")
