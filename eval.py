"""Report a trained run's reconstructions beside baselines: `python eval.py --ckpt RUN [--split test] ...`."""

from __future__ import annotations

import argparse

from vaegan_jax import cli


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of eval.py."""
    parser = cli.OneLineArgumentParser(
        prog="eval.py",
        description="Evaluate a checkpoint's fMRI reconstructions on one split, side by side with baselines "
        "fitted on the fit trials: PCC, MSE, SSIM (7x7 uniform and 11x11 Gaussian) and n-way identification "
        "at the stimulus resolution, pixels in [0, 1]. Writes metrics.json, reconstructions.npz and "
        "reconstructions.png, and logs to the run's TensorBoard.",
    )
    parser.add_argument("--ckpt", required=True, metavar="PATH",
                        help="run folder, its checkpoints/ folder or a checkpoints/<step> folder")
    parser.add_argument("--data", metavar="PATH", help="data file (default: the data the run was trained on)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train"),
                        help="test: standard test split (default); val: validation trials; train: the fit trials")
    parser.add_argument("--out", metavar="DIR", help="report folder (default: <run>/eval-<split>-step<N>)")
    parser.add_argument("--baselines", default="ridge,mean", metavar="LIST",
                        help="comma-separated baselines, e.g. ridge,mean,latent-ridge (default: ridge,mean; "
                        "empty for none)")
    parser.add_argument("--baseline-voxels", default="all", choices=("all", "selected"),
                        help="voxels the baselines read: all (default, as the baselines are defined) or the "
                        "run's selection (train.selected_voxels), for a like-for-like comparison")
    parser.add_argument("--set", action="append", default=[], metavar="inference.FIELD=VALUE",
                        help="decode differently from training, e.g. --set inference.temperature=0.5 or "
                        "inference.samples=0 (posterior mean); repeatable")
    parser.add_argument("--step", type=int, metavar="N", help="checkpoint step (default: the best by validation score)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    cli.add_distributed_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Parse arguments, evaluate, print the table and where the report went."""
    args = parse_args(argv)
    cli.use_compilation_cache()
    cli.join_processes(args)
    from vaegan_jax.evaluation import evaluate_run, format_table, parse_baselines

    out, report = evaluate_run(
        args.ckpt, data_path=args.data, split=args.split, out=args.out,
        baselines=parse_baselines(args.baselines), step=args.step, baseline_voxels=args.baseline_voxels,
        inference=args.set,
    )
    if not cli.is_main_process():
        return 0
    print(format_table(report.metrics))
    print(f"\nreport  {out}  (metrics.json, reconstructions.npz, reconstructions.png)")
    return 0


if __name__ == "__main__":
    cli.run_as_program(main)
