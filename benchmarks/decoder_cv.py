"""Cross-validate the fMRI path's linear start over the training trials: voxel counts x decoding temperatures.

For a run's checkpoint (best use the end of stage I: step 20 of the `fast` preset), K folds over all the
training trials (fit and validation; the test split is never read). In each fold, on the other folds' trials
only: z-score the voxels, select voxels (data.prepare.select_voxels), fit the linear cognitive encoder's
ridge start (initialisation.fit_latent_readout) onto the checkpoint's visual latent;
then decode the held-out fold with the checkpoint's generator (choices.out_of_fold_reconstructions, what a
run itself does on its fit trials alone when `fast` chooses its voxel count and temperature).
Scores pool the out-of-fold reconstructions of every trial, so 2-way identification runs over all pairs of
training trials: a far finer measure than the 10 validation trials give:

    .venv/bin/python train.py --out runs/s0 --set train.epochs=20,0,0
    .venv/bin/python benchmarks/decoder_cv.py --ckpt runs/s0/checkpoints/20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runs as a plain script from anywhere, so the package is found next to this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from vaegan_jax import choices, load_run, metrics  # noqa: E402
from vaegan_jax.steps import member_keys, take_member  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Print PCC, MSE, SSIM and 2-way identification of the out-of-fold reconstructions per setting."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="run folder or checkpoints/<step> folder")
    parser.add_argument("--step", type=int, help="checkpoint step (default: as eval.py picks it)")
    parser.add_argument("--voxels", default="0,150,300,450,600", help="comma-separated voxel counts (0: all)")
    parser.add_argument("--temperatures", default="0,0.5,0.75,1", help="comma-separated decoding temperatures "
                        "(0: G(posterior mean); else the mean of G over the config's draws at that fraction of the spread)")
    parser.add_argument("--folds", type=int, default=9)
    args = parser.parse_args(argv)
    run = load_run(args.ckpt, args.step)
    config = run.config
    if config.model.cognitive_hidden != 0:
        parser.error("the checkpoint's cognitive encoder is not linear (model.cognitive_hidden != 0)")
    trials = run.training_data().train
    voxels, images = trials.voxels.astype(np.float64), trials.images
    counts = tuple(int(n) for n in args.voxels.split(","))
    temperatures = tuple(float(t) for t in args.temperatures.split(","))
    members = range(len(run.member_origins))
    keys = member_keys(config, run.meta.stage)
    reconstructions = choices.out_of_fold_reconstructions(
        config, [take_member(run.states, k) for k in members], [keys[k] for k in members],
        voxels, images, counts, temperatures, args.folds,
    )
    print(f"{run.checkpoint.path}: {len(trials)} training trials, {args.folds} folds; test split not read")
    print(f"{'voxels':>7} {'temp':>5} {'PCC':>7} {'MSE':>7} {'SSIM':>7} {'2-way':>7}")
    for (n_voxels, t), decoded in reconstructions.items():
        scores = metrics.reconstruction_metrics(images, decoded.mean(axis=0))
        print(f"{n_voxels or voxels.shape[1]:>7} {t:>5.2f} " + " ".join(
            f"{np.mean(scores[m]):>7.4f}" for m in ("pcc", "mse", "ssim", "ident_2way")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
