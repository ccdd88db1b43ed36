"""How hard the embedded stand-in is, beside the real 69 file: the baselines of eval.py on the standard test split.

For each stand-in seed it carves the validation split as a run does (`train.val_trials` 10,
`train.split_seed` 0), z-scores voxels and selects 450 of them on the fit trials, fits the mean image,
ridge and latent-ridge on the fit trials (every voxel, then the 450) and scores them on the test split,
as `eval.py --baselines ridge,mean,latent-ridge [--baseline-voxels selected]` does. It prints each
figure's mean over the seeds beside the real file's (data.md, measured outside the repository).
`--set field=value` changes the voxel model (`synthetic.VoxelModel`) to try other settings; the latent-ridge
VAE, which does not depend on voxels, is trained once per seed and shared by every setting.

    .venv/bin/python benchmarks/calibrate_standin.py --seeds 0,1,2,3
    .venv/bin/python benchmarks/calibrate_standin.py --set snr=0.5 --set global_noise=0.2 --set snr=0.6,footprint=0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaegan_jax import metrics  # noqa: E402
from vaegan_jax.baselines import LatentRidgeDecoder, MeanImageDecoder, RidgeDecoder  # noqa: E402
from vaegan_jax.data import synthetic  # noqa: E402
from vaegan_jax.data.prepare import prepare  # noqa: E402

MEASURES = ("pcc", "mse", "ssim", "ident_2way")
# The real Donders file, standard test split, the project's baselines (data.md, measured at 4967ecc).
REAL = {
    "mean": (0.653, 0.0550, 0.307, 0.500),
    "ridge, every voxel": (0.782, 0.0392, 0.495, 0.933),
    "ridge, 450 voxels": (0.811, 0.0345, 0.569, 0.978),
    "latent-ridge, every voxel": (0.845, 0.0294, 0.696, 0.989),
    "latent-ridge, 450 voxels": (0.848, 0.0287, 0.735, 1.000),
}


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
    return np.array([float(np.mean(per_image[name])) for name in MEASURES])


def seed_figures(seed: int, models: list[synthetic.VoxelModel], val_trials: int, selected: int) -> list[dict]:
    """Per voxel model, each baseline's figures on stand-in `seed`."""
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
    args = parser.parse_args()
    models = [parse_model(text) for text in args.set] or [synthetic.VoxelModel()]
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = [seed_figures(seed, models, args.val_trials, args.selected) for seed in seeds]
    for k, model in enumerate(models):
        changed = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
                   if getattr(model, f.name) != f.default}
        print(f"\nvoxel model {changed or 'default'}; stand-in seeds {seeds}, mean over seeds (real file in brackets)")
        print(f"{'method':28}" + "".join(f"{name:>20}" for name in MEASURES))
        for method, real in REAL.items():
            figures = np.array([seed[k][method] for seed in per_seed])
            cells = [f"{m:.3f}±{s:.3f} ({r:.3f})" for m, s, r in zip(figures.mean(0), figures.std(0), real)]
            print(f"{method:28}" + "".join(f"{cell:>20}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
