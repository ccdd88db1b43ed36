"""How hard the embedded stand-in is, beside the real 69 file: the baselines of eval.py on the standard test split.

For each stand-in seed it carves the validation split as a run does (`train.val_trials` 10,
`train.split_seed` 0), z-scores voxels and selects 450 of them on the fit trials, fits the mean image,
ridge and latent-ridge on the fit trials (every voxel, then the 450) and scores them on the test split,
as `eval.py --baselines ridge,mean,latent-ridge [--baseline-voxels selected]` does. It prints each
figure's mean over the seeds beside the real file's (data.md, measured outside the repository).
`--set field=value` changes the voxel model (`synthetic.VoxelModel`) to try other settings; the latent-ridge
VAE, which does not depend on voxels, is trained once per seed and shared by every setting.

`--model-runs PATTERN` adds the model: runs trained on each stand-in seed (`{seed}` in the pattern, a glob
beyond it) are taken at their last checkpoint (stage I's: it does not depend on voxels either), their linear
cognitive encoder is set to the start stage II learns from, fitted on the same 450 voxels (ridge onto the visual
latents of the fit images, mixed as the run mixes it), and they decode the test voxels as the run decodes; the
row is the mean over a seed's runs, then over seeds, and a last row gives its lead over latent-ridge on those
voxels. The real figures beside it are the `fast` preset's of the
real measurement (10/10/5 epochs, 450 voxels, temperature 0.75), whose stage I the runs should repeat:

    python train.py --data standinD.mat --seed S --epochs 10,0,0 --set loss.pixel_weight=0 \\
        --set train.weight_average=0 --set train.updates=sequential --set train.selected_voxels=450 \\
        --set inference.temperature=0.75 --set train.readout_mix=0 --set inference.black_level=0

    .venv/bin/python benchmarks/calibrate_standin.py --seeds 0,1,2,3
    .venv/bin/python benchmarks/calibrate_standin.py --set snr=0.5 --set global_noise=0.2 --set snr=0.6,footprint=0.5
    .venv/bin/python benchmarks/calibrate_standin.py --model-runs 'runs/stage1-d{seed}-s*'
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaegan_jax import load_run, metrics  # noqa: E402
from vaegan_jax.baselines import LatentRidgeDecoder, MeanImageDecoder, RidgeDecoder  # noqa: E402
from vaegan_jax.checkpoints import CheckpointStore  # noqa: E402
from vaegan_jax.data import synthetic  # noqa: E402
from vaegan_jax.data.prepare import prepare, to_model_images  # noqa: E402
from vaegan_jax.initialisation import ridge_initialised_members  # noqa: E402
from vaegan_jax.reconstruction import SUMMARY_METRICS  # noqa: E402
from vaegan_jax.runs import RunPaths  # noqa: E402
from vaegan_jax.steps import States  # noqa: E402
from vaegan_jax.trained_run import TrainedRun  # noqa: E402

# The real Donders file, standard test split, the project's baselines (data.md, measured at 4967ecc).
REAL = {
    "mean": (0.653, 0.0550, 0.307, 0.500),
    "ridge, every voxel": (0.782, 0.0392, 0.495, 0.933),
    "ridge, 450 voxels": (0.811, 0.0345, 0.569, 0.978),
    "latent-ridge, every voxel": (0.845, 0.0294, 0.696, 0.989),
    "latent-ridge, 450 voxels": (0.848, 0.0287, 0.735, 1.000),
}
# The `fast` preset of the real measurement, mean over training seeds 0-2 (data.md), and its lead over latent-ridge.
MODEL = "model, `fast` of then"
LEAD = "model - latent-ridge, 450"
REAL_MODEL = {MODEL: (0.821, 0.0337, 0.657, 0.967)}
REAL_MODEL[LEAD] = tuple(m - b for m, b in zip(REAL_MODEL[MODEL], REAL["latent-ridge, 450 voxels"]))


def parse_model(text: str) -> synthetic.VoxelModel:
    """A VoxelModel from 'field=value,field=value' (empty: the defaults)."""
    fields = {f.name: f.type for f in dataclasses.fields(synthetic.VoxelModel)}
    changes = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in fields:
            raise SystemExit(f"unknown voxel-model field {name!r}; fields: {', '.join(fields)}")
        changes[name] = int(value) if fields[name] in (int, "int") else float(value)
    return dataclasses.replace(synthetic.VoxelModel(), **changes)


def scores(images: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """The four summary measures, each a mean over trials."""
    per_image = metrics.reconstruction_metrics(images, reconstructions)
    return np.array([float(np.mean(per_image[name])) for name in SUMMARY_METRICS])


def last_checkpoint(folder: str) -> TrainedRun:
    """A run at its newest checkpoint (not the best by validation, which the fMRI path and so the voxels choose)."""
    store = CheckpointStore(RunPaths(Path(folder)).checkpoints, read_only=True)
    try:
        return load_run(folder, store.latest_step())
    finally:
        store.close()


def readout_states(run: TrainedRun, fit_voxels: np.ndarray, fit_images: np.ndarray,
                   extra_images: np.ndarray | None) -> States:
    """A run's states with the cognitive encoder that stage II starts from, fitted on these voxels
    (`initialisation.ridge_initialised_members`, mixed with the inverted encoding model as the run mixes it)."""
    config = run.config
    if config.inference.temperature < 0 or config.train.readout_mix < 0 or config.inference.black_level < 0:
        raise SystemExit("--model-runs: runs must fix inference.temperature, train.readout_mix and inference.black_level")
    size = config.model.image_size
    extras = None if extra_images is None else to_model_images(extra_images, size)
    return ridge_initialised_members(config, run.states, fit_voxels, to_model_images(fit_images, size), extras)


def model_reconstructions(run: TrainedRun, fit_voxels: np.ndarray, fit_images: np.ndarray, test_voxels: np.ndarray,
                          extra_images: np.ndarray | None) -> np.ndarray:
    """The test voxels decoded by `readout_states` along the run's own reconstruction path (its members averaged)."""
    states = readout_states(run, fit_voxels, fit_images, extra_images)
    members = run.reconstructor(states, run.checkpoint.arrays.keys, test_voxels.astype(np.float32), "fmri",
                                fit_images.shape[1])
    return members.mean(axis=0)


def seed_figures(seed: int, models: list[synthetic.VoxelModel], val_trials: int, selected: int,
                 runs: list[TrainedRun]) -> list[dict]:
    """Per voxel model, each baseline's figures on stand-in `seed`, and the model's (mean over `runs`) if any."""
    vae = None
    out = []
    for model in models:
        dataset = synthetic.load_synthetic(seed, model)
        data = prepare(dataset, val_trials, 0, selected)
        fit, test = data.fit, data.test
        if vae is None:
            vae = LatentRidgeDecoder().fit(fit.voxels, fit.images, data.extra_images)
        chosen = data.voxel_selection
        figures = {"mean": scores(test.images, MeanImageDecoder().fit(fit.voxels, fit.images).predict(test.voxels))}
        for label, columns in (("every voxel", slice(None)), (f"{selected} voxels", chosen)):
            ridge = RidgeDecoder().fit(fit.voxels[:, columns], fit.images)
            figures[f"ridge, {label}"] = scores(test.images, ridge.predict(test.voxels[:, columns]))
            readout = vae.fit_readout(fit.voxels[:, columns], fit.images)
            figures[f"latent-ridge, {label}"] = scores(test.images, readout.predict(test.voxels[:, columns]))
        if runs:
            figures[MODEL] = np.mean([scores(test.images, model_reconstructions(
                run, fit.voxels[:, chosen], fit.images, test.voxels[:, chosen], data.extra_images)) for run in runs], axis=0)
            figures[LEAD] = figures[MODEL] - figures[f"latent-ridge, {selected} voxels"]
        out.append(figures)
    return out


def main() -> int:
    """Command line: print the stand-in's baseline figures beside the real file's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="stand-in seeds, comma-separated (default 0,1,2)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE[,FIELD=VALUE]",
                        help="a voxel model to try (repeatable; default: the calibrated one)")
    parser.add_argument("--val-trials", type=int, default=10)
    parser.add_argument("--selected", type=int, default=450)
    parser.add_argument("--model-runs", metavar="PATTERN",
                        help="run folders trained on stand-in seed {seed}, e.g. 'runs/stage1-d{seed}-s*' (see above)")
    args = parser.parse_args()
    models = [parse_model(text) for text in args.set] or [synthetic.VoxelModel()]
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = []
    for seed in seeds:
        folders = sorted(f for f in glob.glob(args.model_runs.format(seed=seed)) if Path(f).is_dir()) if args.model_runs else []
        if args.model_runs and not folders:
            raise SystemExit(f"--model-runs: no run folder matches {args.model_runs.format(seed=seed)}")
        per_seed.append(seed_figures(seed, models, args.val_trials, args.selected, [last_checkpoint(f) for f in folders]))
    rows = {**REAL, **(REAL_MODEL if args.model_runs else {})}
    for k, model in enumerate(models):
        changed = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
                   if getattr(model, f.name) != f.default}
        print(f"\nvoxel model {changed or 'default'}; stand-in seeds {seeds}, mean over seeds (real file in brackets)")
        print(f"{'method':28}" + "".join(f"{name:>23}" for name in SUMMARY_METRICS))
        for method, real in rows.items():
            figures = np.array([seed[k][method] for seed in per_seed])
            cells = [f"{m:+.4f}±{s:.4f} ({r:+.4f})" if method == LEAD else f"{m:.3f}±{s:.3f} ({r:.3f})"
                     for m, s, r in zip(figures.mean(0), figures.std(0), real)]
            print(f"{method:28}" + "".join(f"{cell:>23}" for cell in cells))
            if method == LEAD:
                print(f"{'  PCC, seed by seed':28}" + "  ".join(f"{seed} {lead:+.4f}" for seed, lead in zip(seeds, figures[:, 0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
