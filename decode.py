"""Reconstruct images from new voxel rows with a trained run: `python decode.py --run RUN --voxels FILE`."""

from __future__ import annotations

import argparse

from vaegan_jax import cli


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of decode.py."""
    parser = cli.OneLineArgumentParser(
        prog="decode.py",
        description="Reconstruct the images seen in new scans of the participant a run was trained on. The "
        "voxel rows are raw, every voxel in the layout of the training file; the run z-scores and selects them "
        "as it did in training. Writes reconstructions.npz (images: (N, H, W) in [0, 1]) and reconstructions.png.",
    )
    parser.add_argument("--run", required=True, metavar="PATH",
                        help="run folder, its checkpoints/ folder or a checkpoints/<step> folder")
    parser.add_argument("--voxels", required=True, metavar="FILE",
                        help=".npy file of (trials, voxels) rows, or a .npz or .mat file holding such an array")
    parser.add_argument("--key", metavar="NAME", help="the array of a .npz or .mat file to read (default: its only array)")
    parser.add_argument("--out", metavar="DIR", help="output folder, new or an earlier decode.py output "
                        "(default: <voxels file name>-decoded in the current folder)")
    parser.add_argument("--step", type=int, metavar="N", help="checkpoint step (default: the best by validation score)")
    parser.add_argument("--set", action="append", default=[], metavar="inference.FIELD=VALUE",
                        help="decode differently from training, e.g. --set inference.samples=0; repeatable")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Parse arguments, read the voxels, reconstruct, write the images."""
    args = parse_args(argv)
    cli.use_compilation_cache()
    from pathlib import Path

    from vaegan_jax import load_run
    from vaegan_jax.data.loaders import load_voxel_rows
    from vaegan_jax.trained_run import decode_output, save_reconstructions

    out = decode_output(args.out or f"{Path(args.voxels).name}-decoded")
    voxels = load_voxel_rows(args.voxels, args.key)
    run = load_run(args.run, args.step, args.set)
    images = run.reconstruct(voxels, source=args.voxels)
    save_reconstructions(out, images, run.checkpoint.path)
    print(f"{len(images)} reconstructions by {run.checkpoint.path}")
    print(f"written  {out}  (reconstructions.npz, reconstructions.png)")
    return 0


if __name__ == "__main__":
    cli.run_as_program(main)
