"""A trained run as a Python object: `load_run(path).reconstruct(voxels)` decodes new scans of the participant.

    run = vaegan_jax.load_run("runs/my-run")           # the best checkpoint by validation score
    images = run.reconstruct(voxels)                   # (N, V) raw voxel rows -> (N, H, W) in [0, 1]
    report = run.evaluate(split="test")                # eval.py's report, in memory

The run applies its own preprocessing: voxels are z-scored with the statistics of the run's fit trials and
the voxels the run selected are kept; rows must hold every voxel, in the layout of the training file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from vaegan_jax import config as config_lib
from vaegan_jax.checkpoints import Checkpoint, CheckpointMeta, load_checkpoint
from vaegan_jax.config import Config, member_origins
from vaegan_jax.data import load_dataset
from vaegan_jax.data.dataset import Dataset
from vaegan_jax.data.prepare import PreparedData, prepare
from vaegan_jax.errors import CheckpointError, ConfigError, DataError
from vaegan_jax.images import save_png, tile_rows
from vaegan_jax.reconstruction import Reconstructor, model_inputs
from vaegan_jax.steps import States, decoding_states
from vaegan_jax.writer import to_stderr

if TYPE_CHECKING:
    from vaegan_jax.evaluation import Report


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A restored checkpoint of a run, ready to decode: its config (inference as asked), states and preprocessing."""

    checkpoint: Checkpoint
    config: Config
    reconstructor: Reconstructor

    @property
    def meta(self) -> CheckpointMeta:
        """The checkpoint's metadata: stage, epoch, config as trained, the training data's record, the split."""
        return self.checkpoint.meta

    @property
    def states(self) -> States:
        """Every member's train states, stacked on a leading member axis."""
        return self.checkpoint.arrays.states

    @property
    def member_origins(self) -> list[dict[str, float]]:
        """Each member's seed and, for a snapshot ensemble, the stage-I epoch it grew from (or its KL weight)."""
        return member_origins(self.meta.config, self.meta.stage)

    @property
    def n_voxels(self) -> int:
        """How many voxels a row of raw voxels must hold."""
        return self.meta.data.n_voxels

    @property
    def image_size(self) -> int:
        """The side of the stimuli, and of the reconstructions."""
        return self.meta.data.image_size

    def with_inference(self, assignments: list[str]) -> TrainedRun:
        """The run decoding as `inference.field=value` assignments say (how the fMRI path turns a posterior into an image)."""
        for assignment in assignments:
            if not assignment.strip().startswith("inference."):
                raise ConfigError(f"--set {assignment!r}: a trained run changes only inference.* (how it decodes); "
                                  "the rest of the config is the trained model's")
        config = config_lib.override(self.config, assignments)
        return dataclasses.replace(self, config=config, reconstructor=Reconstructor(config, self.checkpoint.mesh))

    def decode(self, model_voxels: np.ndarray) -> np.ndarray:
        """Each member's reconstructions (member, trial, H, W) of voxels already z-scored and selected."""
        arrays = self.checkpoint.arrays
        return self.reconstructor(arrays.states, arrays.keys, np.asarray(model_voxels, np.float32), "fmri", self.image_size)

    def member_reconstructions(self, voxels: np.ndarray, source: str = "voxels") -> np.ndarray:
        """Each member's reconstructions (member, trial, H, W) in [0, 1] of raw voxel rows (trial, voxel);
        errors name the rows `source`."""
        voxels = np.asarray(voxels)
        if voxels.ndim != 2 or not np.issubdtype(voxels.dtype, np.number):
            raise DataError(f"{source}: expected a 2-D numeric (trials, voxels) array, got {voxels.dtype} of shape "
                            f"{voxels.shape}")
        if voxels.shape[1] != self.n_voxels:
            raise DataError(
                f"{source}: {voxels.shape[1]} voxels per row, but {self.checkpoint.path} was trained on {self.n_voxels}; "
                "give raw rows of the same participant with every voxel, as in the training file"
            )
        voxels = voxels.astype(np.float32)
        if not np.all(np.isfinite(voxels)):
            raise DataError(f"{source}: the voxels contain NaN or infinite values")
        selection = np.asarray(self.meta.split.voxels, np.int64)
        return self.decode(model_inputs(voxels, self.checkpoint.arrays.scaler, selection))

    def reconstruct(self, voxels: np.ndarray, source: str = "voxels") -> np.ndarray:
        """The model's reconstructions (trial, H, W) in [0, 1] of raw voxel rows (trial, voxel): the members' mean."""
        return self.member_reconstructions(voxels, source).mean(axis=0)

    def training_data(self) -> Dataset:
        """The data set the run was trained on, loaded again from the file or generator it records."""
        data = self.meta.data
        if not data.origin.known:
            raise DataError(f"{self.checkpoint.path}: the checkpoint records no file or generator for its data "
                            f"({data.name}, {data.source}); pass --data PATH")
        return data.origin.load()

    def prepare(self, dataset: Dataset, warn: Callable[[str], None] = to_stderr) -> PreparedData:
        """The run's fit/val/test splits of `dataset`, refusing data the model cannot read and warning on other data."""
        trained = self.meta.data
        if dataset.n_voxels != trained.n_voxels:
            raise DataError(f"{dataset.source}: {dataset.n_voxels} voxels, but {self.checkpoint.path} was trained "
                            f"on {trained.n_voxels}")
        if dataset.image_size != trained.image_size:
            raise DataError(f"{dataset.source}: {dataset.image_size}x{dataset.image_size} images, but "
                            f"{self.checkpoint.path} was trained on {trained.image_size}x{trained.image_size}")
        train, split = self.config.train, self.meta.split
        other_data = dataset.fingerprint != trained.fingerprint
        trained_inputs = (self.checkpoint.arrays.scaler, np.asarray(split.voxels, np.int64)) if other_data else None
        data = prepare(dataset, train.val_trials, train.split_seed, train.selected_voxels, train.shipped_prior,
                       trained_inputs)
        if other_data:
            warn(f"warning: evaluating on data {dataset.fingerprint} ({dataset.source}), but {self.checkpoint.path} "
                 f"was trained on data {trained.fingerprint} ({trained.source}); the model reads its voxels as in "
                 "training, the splits and the baselines are this data's own")
            return data
        rebuilt = {
            "fit trials": (data.fit.indices, split.fit), "val trials": (data.val.indices, split.val),
            "test trials": (data.test.indices, split.test), "selected voxels": (data.voxel_selection, split.voxels),
        }
        for what, (indices, recorded) in rebuilt.items():
            # Same data, another split or selection: "train", "val" and the model's inputs would silently change.
            if tuple(indices.tolist()) != recorded:
                raise CheckpointError(
                    f"{self.checkpoint.path}: the {what} rebuilt from the config differ from the ones recorded in "
                    "the checkpoint; it was written by another version of vaegan_jax"
                )
        return data

    def evaluate(
        self,
        data_path: str | os.PathLike | None = None,
        split: str = "test",
        baselines: tuple[str, ...] | None = None,
        baseline_voxels: str = "all",
        warn: Callable[[str], None] = to_stderr,
    ) -> Report:
        """eval.py's report of a split (the training data's unless `data_path` names other; eval.py's baselines
        unless `baselines` names others), in memory: metrics.json's content, the reconstructions and the grid."""
        # evaluation.py builds on this module (eval.py loads runs through it), so it is imported when needed.
        from vaegan_jax import evaluation

        dataset = self.training_data() if data_path is None else load_dataset(data_path)
        baselines = evaluation.DEFAULT_BASELINES if baselines is None else baselines
        return evaluation.evaluate(self, dataset, self.prepare(dataset, warn), split, baselines, baseline_voxels)


def load_run(path: str | os.PathLike, step: int | None = None, inference: list[str] | tuple[str, ...] = ()) -> TrainedRun:
    """A trained run from its folder, its checkpoints/ folder or a checkpoints/<step> folder (the best checkpoint
    by validation score unless a step is named); `inference` assignments change how it decodes."""
    checkpoint = load_checkpoint(Path(path), step)
    states = decoding_states(checkpoint.arrays.states, checkpoint.meta.stage)
    checkpoint = dataclasses.replace(checkpoint, arrays=dataclasses.replace(checkpoint.arrays, states=states))
    config = checkpoint.meta.config
    run = TrainedRun(checkpoint, config, Reconstructor(config, checkpoint.mesh))
    return run.with_inference(list(inference)) if inference else run


DECODED_FILES = ("reconstructions.npz", "reconstructions.png")


def decode_output(out: str | os.PathLike) -> Path:
    """decode.py's output folder, refused unless missing, empty or an earlier decode.py output (so that nothing else,
    a run's own reconstructions.png among them, is overwritten)."""
    out = Path(out)
    if out.exists():
        earlier = out.is_dir() and all(entry.name in DECODED_FILES for entry in out.iterdir())
        if not earlier:
            raise ConfigError(f"{out}: exists and is not an earlier decode.py output folder; choose another --out")
    return out


def save_reconstructions(out: str | os.PathLike, images: np.ndarray, checkpoint: Path, per_row: int = 10) -> None:
    """Write decode.py's folder (`decode_output`): reconstructions.npz (images (N, H, W) in [0, 1] and the checkpoint
    that made them) and reconstructions.png, `per_row` images a row."""
    out = decode_output(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "reconstructions.npz", images=images.astype(np.float32), checkpoint=str(checkpoint))
        save_png(out / "reconstructions.png", tile_rows([images[i:i + per_row] for i in range(0, len(images), per_row)]))
    except OSError as err:
        raise ConfigError(f"{out}: cannot write the reconstructions ({err.strerror or err}); choose another --out") from None
