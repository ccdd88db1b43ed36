"""Cross-validate the fMRI path's linear start over the training trials: voxel counts x decoding temperatures,
and the baselines beside it on the same folds.

For a run's checkpoint, K folds over all the training trials (fit and validation; the test split is never read).
In each fold, on the other folds' trials only: z-score the voxels, select voxels (data.prepare.select_voxels),
fit the linear cognitive encoder's ridge start (initialisation.fit_latent_readout) onto the checkpoint's visual
latent; then decode the held-out fold with the checkpoint's generator (choices.out_of_fold_reconstructions,
what a run itself does on its fit trials alone when `fast` chooses its voxel count and temperature).
Use a checkpoint of stage I or II, whose generator has seen the trials' images but none of their voxels, as
latent-ridge's VAE has: stage III fine-tunes the generator on the fit trials' fMRI reconstructions, which
flatters the model here (by about 0.02 PCC on the stand-in), so a stage-III checkpoint is warned about. For a
run folder whose best checkpoint is stage III's, the default is the last checkpoint before stage III, which
every run keeps for this.
Scores pool the out-of-fold reconstructions of every trial, so 2-way identification runs over all pairs of
training trials: a far finer measure than the 10 validation trials give.

With --baselines, each baseline learns from images once as eval.py fits it (the latent-ridge VAE on the fit
images and the extras stage I saw), then refits its voxel readout in every fold at every voxel count. The
best setting of each method by PCC is then compared with the model's best, trial by trial: the mean paired
difference and its standard error, over 90 trials instead of the test split's 10 (2-way's are approximate,
as its per-trial values share pairs of trials). Both bests are chosen on these folds, so each is a little
optimistic, alike. The model's reconstructions are cleared below the run's black level (config.InferenceConfig)
and its readout mixed as the run chose (train.readout_mix) unless --black-level and --readout-mix say otherwise;
a stage-I checkpoint predates the run's choice, so for it they come from the run folder's config.json. After
a default run:

    .venv/bin/python train.py --out runs/s0
    .venv/bin/python benchmarks/decoder_cv.py --ckpt runs/s0 --baselines latent-ridge,ridge
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runs as a plain script from anywhere, so the package is found next to this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from vaegan_jax import choices, load_run, metrics  # noqa: E402
from vaegan_jax.checkpoints import checkpoint_stages, locate_checkpoint  # noqa: E402
from vaegan_jax.config import AUTO  # noqa: E402
from vaegan_jax.data.prepare import clear_faint_pixels  # noqa: E402
from vaegan_jax.evaluation import BASELINES  # noqa: E402
from vaegan_jax.reconstruction import SUMMARY_METRICS  # noqa: E402
from vaegan_jax.runs import RunPaths, read_saved_config  # noqa: E402
from vaegan_jax.rng import member_keys  # noqa: E402
from vaegan_jax.steps import take_member  # noqa: E402

LABELS = ("PCC", "MSE", "SSIM", "2-way")


def main(argv: list[str] | None = None) -> int:
    """Print PCC, MSE, SSIM and 2-way identification of the out-of-fold reconstructions per setting."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="run folder or checkpoints/<step> folder")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the best by validation, or if that "
                        "is of stage III the last before stage III)")
    parser.add_argument("--voxels", default="0,150,300,450,600", help="comma-separated voxel counts (0: all)")
    parser.add_argument("--temperatures", default="0,0.5,0.75,1", help="comma-separated decoding temperatures "
                        "(0: G(posterior mean); else the mean of G over the config's draws at that fraction of the spread)")
    parser.add_argument("--folds", type=int, default=9)
    parser.add_argument("--black-level", type=float, help="clear the model's pixels fainter than this (default: the "
                        "run's own black level, from its config.json for a checkpoint saved before the run chose; 0 if it never did)")
    parser.add_argument("--baselines", default="", help="comma-separated baselines of eval.py (ridge, mean, "
                        "latent-ridge) to cross-validate on the same folds and compare with the model")
    parser.add_argument("--readout-mix", type=float, help="mix of the inverted encoding model in the readout "
                        "(train.readout_mix; default: the run's own, as --black-level)")
    args = parser.parse_args(argv)
    run = load_run(args.ckpt, default_step(args.ckpt) if args.step is None else args.step)
    config = run.config
    if config.model.cognitive_hidden != 0:
        parser.error("the checkpoint's cognitive encoder is not linear (model.cognitive_hidden != 0)")
    if run.meta.stage == 3:
        print(f"warning: {run.checkpoint.path} is of stage III, whose generator learnt from these trials' fMRI "
              "reconstructions, so the model's out-of-fold figures flatter it; a stage I or II checkpoint (--step) "
              "compares fairly", file=sys.stderr)
    baselines = [name for name in args.baselines.split(",") if name]
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        parser.error(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    dataset = run.training_data()
    voxels, images = dataset.train.voxels.astype(np.float64), dataset.train.images
    counts = tuple(int(n) for n in args.voxels.split(","))
    temperatures = tuple(float(t) for t in args.temperatures.split(","))
    members = range(len(run.member_origins))
    keys = member_keys(config, run.meta.stage)
    chosen = read_saved_config(RunPaths(run.checkpoint.run))
    black_level = args.black_level
    if black_level is None:
        black_level = run_setting(config.inference.black_level, chosen.inference.black_level)
    readout_mix = args.readout_mix
    if readout_mix is None:
        readout_mix = run_setting(config.train.readout_mix, chosen.train.readout_mix)
    data = run.prepare(dataset)
    extras = data.extra_images if config.train.use_extra_images else None
    reconstructions = {
        ("D-VAE/GAN", n, t): clear_faint_pixels(decoded, black_level).mean(axis=0)
        for (n, t), decoded in choices.out_of_fold_reconstructions(
            config, [take_member(run.states, k) for k in members], [keys[k] for k in members],
            voxels, images, counts, temperatures, args.folds, extras, readout_mix,
        ).items()
    }
    if baselines:
        for name in baselines:
            decoder = BASELINES[name]().fit(data.fit.voxels, data.fit.images, extras)
            for fold in choices.cross_validation_folds(voxels, images, counts, args.folds):
                decoded = decoder.fit_readout(fold.train_voxels, images[fold.train]).predict(fold.held_out_voxels)
                reconstructions.setdefault((name, fold.voxel_count, None), np.zeros_like(images))[fold.held_out] = decoded
    scores = {setting: metrics.reconstruction_metrics(images, decoded) for setting, decoded in reconstructions.items()}
    print(f"{run.checkpoint.path}: {len(images)} training trials, {args.folds} folds, the model's readout mix "
          f"{readout_mix:g} and black level {black_level:g}; test split not read")
    print(f"{'method':<12} {'voxels':>7} {'temp':>5} " + " ".join(f"{label:>7}" for label in LABELS))
    for (method, n_voxels, t), score in scores.items():
        temperature = "-" if t is None else f"{t:.2f}"
        print(f"{method:<12} {n_voxels or voxels.shape[1]:>7} {temperature:>5} " + " ".join(
            f"{np.mean(score[m]):>7.4f}" for m in SUMMARY_METRICS), flush=True)
    best = {}
    for setting, score in scores.items():
        if setting[0] not in best or np.mean(score["pcc"]) > np.mean(scores[best[setting[0]]]["pcc"]):
            best[setting[0]] = setting
    model = scores[best["D-VAE/GAN"]]
    for name in baselines:
        differences = (metrics.paired_difference(model[m], scores[best[name]][m]) for m in SUMMARY_METRICS)
        print(f"D-VAE/GAN ({describe(best['D-VAE/GAN'])}) - {name} ({describe(best[name])}): " + ", ".join(
            f"{label} {mean:+.4f} +- {se:.4f}" for label, (mean, se) in zip(LABELS, differences)))
    return 0


def default_step(path: str) -> int | None:
    """The step to cross-validate: None for a checkpoints/<step> folder (that one), else the run's best, or if
    that is stage III's the last before stage III."""
    if locate_checkpoint(path, None)[2] is not None:
        return None
    best, stages = checkpoint_stages(path)
    earlier = [step for step, stage in stages.items() if stage < 3]
    if best is None or stages[best] < 3 or not earlier:
        return best
    print(f"note: the best checkpoint, {best}, is of stage III; cross-validating {max(earlier)}, the last before "
          "stage III (--step chooses another)", file=sys.stderr)
    return max(earlier)


def run_setting(checkpoint_value: float, run_value: float) -> float:
    """The checkpoint's setting, or where the run had yet to choose it (AUTO) the run's later choice (0 if none)."""
    return max(run_value if checkpoint_value == AUTO else checkpoint_value, 0.0)


def describe(setting: tuple[str, int, float | None]) -> str:
    """A setting's voxels and temperature in words."""
    _, n_voxels, t = setting
    voxels = "every voxel" if n_voxels == 0 else f"{n_voxels} voxels"
    return voxels if t is None else f"{voxels}, temperature {t:g}"


if __name__ == "__main__":
    sys.exit(main())
