"""Train D-VAE/GAN in three stages: `python train.py [--data PATH] [--preset fast] [--out DIR] ...`."""

from __future__ import annotations

import argparse
import datetime
import sys

from vaegan_jax import cli


def epoch_counts(text: str) -> str:
    """--epochs: three whole numbers I,II,III, not all zero."""
    parts = text.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected three epoch counts I,II,III, e.g. 20,10,10")
    if all(int(part) == 0 for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: at least one stage must train")
    return text


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of train.py."""
    from vaegan_jax.config import PRESETS

    parser = cli.OneLineArgumentParser(
        prog="train.py",
        description="Train D-VAE/GAN (Ren et al. 2021): stage I VAE/GAN on images, stage II fMRI encoder "
        "distilled from the image path, stage III fine-tuning. Without --data it trains on the embedded "
        "synthetic 69-like data set. Curves: tensorboard --logdir runs",
    )
    parser.add_argument("--data", metavar="PATH", help="Donders .mat, DGMM .mat or vaegan_jax .npz file (default: embedded synthetic set)")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS), help="model and schedule preset (default: fast)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default: runs/<time>-<preset>)")
    parser.add_argument("--epochs", type=epoch_counts, metavar="I,II,III", help="epochs of the three stages, e.g. 10,100,10")
    parser.add_argument("--batch-size", type=int, metavar="N", help="batch size")
    parser.add_argument("--seed", type=int, metavar="S", help="training seed: initialisation, batches, dropout, "
                        "elastic distortion (the validation split has train.split_seed)")
    parser.add_argument("--ensemble", type=int, metavar="K",
                        help="train K models seeded S, S+1, ... side by side (vmapped, split across devices); "
                        "the model's reconstruction is their average")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set loss.gamma=0.01 (repeatable)")
    parser.add_argument("--no-extra-images", action="store_true", help="stage I uses only the fitting trials' images")
    parser.add_argument("--on-nan", choices=("stop", "rollback"), help="on a NaN/inf loss: stop the run, or roll back and end the stage")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint, "
                        "with its saved config (--preset, --epochs, --set and the like are not applied)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--no-progress", action="store_true", help="print a line per validation instead of progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    cli.add_distributed_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Parse arguments, load the data, train, print the report."""
    args = parse_args(argv)
    cli.use_compilation_cache()
    cli.join_processes(args)
    from vaegan_jax import config as config_lib
    from vaegan_jax.data import load_dataset, load_synthetic
    from vaegan_jax.data.origin import DataOrigin
    from vaegan_jax.runs import describe_result
    from vaegan_jax.training import run_training

    config = config_lib.preset(args.preset)
    assignments = list(args.set)
    if args.epochs is not None:
        assignments.append(f"train.epochs={args.epochs}")
    if args.batch_size is not None:
        assignments.append(f"train.batch_size={args.batch_size}")
    if args.seed is not None:
        assignments.append(f"train.seed={args.seed}")
    if args.ensemble is not None:
        assignments.append(f"train.ensemble={args.ensemble}")
    if args.no_extra_images:
        assignments.append("train.use_extra_images=false")
    if args.on_nan:
        assignments.append(f"train.on_nan={args.on_nan}")
    config = config_lib.override(config, assignments)
    out = args.out or f"runs/{datetime.datetime.now():%Y%m%d-%H%M%S}-{config.preset}"
    dataset = load_dataset(args.data) if args.data else load_synthetic()
    origin = DataOrigin.of_file(args.data) if args.data else DataOrigin(synthetic_seed=0)
    with cli.stop_on_signals() as interrupt:
        paths, report, timing = run_training(
            config, dataset, out, resume=args.resume, overwrite=args.overwrite, argv=["train.py", *argv],
            interrupt=interrupt, progress=not args.no_progress and sys.stderr.isatty(), origin=origin,
        )
    if not cli.is_main_process():
        return 0
    print(describe_result(paths, report, timing))
    return 0


if __name__ == "__main__":
    cli.run_as_program(main)
