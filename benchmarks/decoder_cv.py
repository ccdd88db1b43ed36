"""Cross-validate the fMRI path's linear start over the training trials: voxel counts x decoding temperatures.

For a run's checkpoint (best use the end of stage I: step 10 of the `fast` preset), K folds over all the
training trials (fit and validation; the test split is never read). In each fold, on the other folds' trials
only: z-score the voxels, select voxels (data.prepare.select_voxels), fit the ridge-initialised linear
cognitive encoder (initialisation.ridge_initialised_cognitive_encoder) onto the checkpoint's visual latent;
then decode the held-out fold with the checkpoint's generator, as training.Trainer would (steps.make_reconstruct).
Scores pool the out-of-fold reconstructions of every trial, so 2-way identification runs over all pairs of
training trials: a far finer measure than the 10 validation trials give. This is what `fast`'s
`train.selected_voxels` and `inference.temperature` rest on (README, "What the fast preset's choices rest on"):

    .venv/bin/python train.py --out runs/s0 --set train.epochs=10,0,0
    .venv/bin/python benchmarks/decoder_cv.py --ckpt runs/s0/checkpoints/10
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

# Runs as a plain script from anywhere, so the package is found next to this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vaegan_jax import config as config_lib  # noqa: E402
from vaegan_jax import evaluation, metrics  # noqa: E402
from vaegan_jax.data.dataset import VoxelScaler  # noqa: E402
from vaegan_jax.data.prepare import select_voxels, to_model_images, to_native_images  # noqa: E402
from vaegan_jax.initialisation import ridge_initialised_cognitive_encoder  # noqa: E402
from vaegan_jax.steps import create_states, make_reconstruct, member_keys, take_member  # noqa: E402


def fold_reconstructions(
    checkpoint: evaluation.Checkpoint, voxels: np.ndarray, images: np.ndarray, train: np.ndarray, held_out: np.ndarray,
    n_voxels: int, temperatures: list[float],
) -> dict[float, np.ndarray]:
    """Reconstructions of the held-out trials at each temperature, everything fitted on the `train` trials."""
    scaler = VoxelScaler.fit(voxels[train])
    fit_voxels, held_voxels = scaler.transform(voxels[train]), scaler.transform(voxels[held_out])
    kept = select_voxels(fit_voxels, images[train], n_voxels)
    config = checkpoint.config
    size = config.model.image_size
    trained = take_member(checkpoint.states, 0)
    states = {**create_states(config, len(kept), jax.random.key(0)),
              "visual_encoder": trained["visual_encoder"], "generator": trained["generator"]}
    states = ridge_initialised_cognitive_encoder(
        config, states, jnp.asarray(fit_voxels[:, kept]), to_model_images(images[train], size)
    )
    key = member_keys(config)[0]
    out = {}
    for temperature in temperatures:
        decoding = dataclasses.replace(
            config, inference=config_lib.InferenceConfig(samples=32 if temperature > 0 else 0, temperature=temperature)
        )
        model_images = make_reconstruct(decoding, "cognitive_encoder")(states, jnp.asarray(held_voxels[:, kept]), key)
        out[temperature] = to_native_images(model_images, images.shape[1])
    return out


def main(argv: list[str] | None = None) -> int:
    """Print PCC, MSE, SSIM and 2-way identification of the out-of-fold reconstructions per setting."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="run folder or checkpoints/<step> folder")
    parser.add_argument("--step", type=int, help="checkpoint step (default: as eval.py picks it)")
    parser.add_argument("--voxels", default="0,150,300,450,600", help="comma-separated voxel counts (0: all)")
    parser.add_argument("--temperatures", default="0,0.5,0.75,1", help="comma-separated decoding temperatures "
                        "(0: G(posterior mean); else the mean of G over 32 draws at that fraction of the spread)")
    parser.add_argument("--folds", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    args = parser.parse_args(argv)
    checkpoint = evaluation.load_checkpoint(args.ckpt, args.step)
    if checkpoint.config.model.cognitive_hidden != 0:
        parser.error("the checkpoint's cognitive encoder is not linear (model.cognitive_hidden != 0)")
    trials = evaluation.load_training_data(checkpoint.meta["data"]).train
    voxels, images = trials.voxels.astype(np.float64), trials.images
    folds = np.array_split(np.random.default_rng(args.seed).permutation(len(trials)), args.folds)
    temperatures = [float(t) for t in args.temperatures.split(",")]
    print(f"{checkpoint.path}: {len(trials)} training trials, {args.folds} folds; test split not read")
    print(f"{'voxels':>7} {'temp':>5} {'PCC':>7} {'MSE':>7} {'SSIM':>7} {'2-way':>7}")
    for n_voxels in (int(n) for n in args.voxels.split(",")):
        pooled = {t: np.zeros(images.shape, np.float32) for t in temperatures}
        for held_out in folds:
            train = np.setdiff1d(np.arange(len(trials)), held_out)
            folds_out = fold_reconstructions(checkpoint, voxels, images, train, held_out, n_voxels, temperatures)
            for t, rec in folds_out.items():
                pooled[t][held_out] = rec
        for t in temperatures:
            scores = metrics.reconstruction_metrics(images, pooled[t])
            print(f"{n_voxels or voxels.shape[1]:>7} {t:>5.2f} " + " ".join(
                f"{np.mean(scores[m]):>7.4f}" for m in ("pcc", "mse", "ssim", "ident_2way")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
