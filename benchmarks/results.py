"""The README's results table: `train.py` then `eval.py` for several seeds, aggregated over the seeds.

For each seed it runs, in fresh processes, exactly what a user would:
    python train.py --seed S --out OUT/seedS [TRAIN_ARGS...]
    python eval.py --ckpt OUT/seedS --baselines ridge,mean,latent-ridge
    python eval.py --ckpt OUT/seedS --baselines ridge,latent-ridge --baseline-voxels selected
(the second only when the run selects voxels: the baselines again, reading the model's voxels) and prints
a Markdown table of the test figures, mean ± sd (ddof 1) over the seeds of each run's mean over trials,
with the per-seed PCCs, the model's lead over each ridge and latent-ridge row on every measure (issue 14's
check), each run's best validation PCC in stages II and III and the wall time of each training run. Runs already finished in OUT
are reused (their eval report too), so an interrupted table can be completed.

    .venv/bin/python benchmarks/results.py --out results
    .venv/bin/python benchmarks/results.py --out results-ens3 --seeds 0,3,6 -- --ensemble 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Runs as a plain script from anywhere, so the package is found next to this folder.
sys.path.insert(0, str(REPO))

from vaegan_jax.reconstruction import LOWER_IS_BETTER  # noqa: E402

BASELINES = "ridge,mean,latent-ridge"
LIKE_FOR_LIKE = "ridge,latent-ridge"
SELECTED = " (model's voxels)"
MEASURES = (("pcc", "PCC", ".3f"), ("mse", "MSE", ".4f"), ("ssim", "SSIM", ".3f"), ("ident_2way", "2-way", ".3f"))
LABELS = {
    "model": "**D-VAE/GAN**", "ridge": "ridge, voxels -> pixels", "latent-ridge": "latent-ridge",
    "mean": "mean training image",
}


def run(command: list[str]) -> float:
    """Run a command from the repository root, failing loudly; return its wall time in seconds."""
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, *command], cwd=REPO, check=True)
    return time.perf_counter() - start


def seed_report(seed: int, out: Path, train_args: list[str]) -> tuple[dict, float | None]:
    """The test report of one seed's run (training and evaluating it unless already done) and the training time."""
    folder = out / f"seed{seed}"
    seconds = None
    if not (folder / "metrics.json").exists():
        seconds = run(["train.py", "--seed", str(seed), "--out", str(folder), "--overwrite", "--no-progress", *train_args])
    report = folder / "eval" / "metrics.json"
    if not report.exists():
        run(["eval.py", "--ckpt", str(folder), "--baselines", BASELINES, "--out", str(folder / "eval")])
    merged = json.loads(report.read_text())
    if json.loads((folder / "config.json").read_text())["train"].get("selected_voxels", 0):
        like = folder / "eval-selected-voxels" / "metrics.json"
        if not like.exists():
            run(["eval.py", "--ckpt", str(folder), "--baselines", LIKE_FOR_LIKE, "--baseline-voxels", "selected",
                 "--out", str(like.parent)])
        methods = json.loads(like.read_text())["methods"]
        merged["methods"].update({name + SELECTED: methods[name] for name in LIKE_FOR_LIKE.split(",")})
    return merged, seconds


def compared_methods(reports: dict[int, dict]) -> list[str]:
    """The methods every run reports: the model and the baselines (ensemble members differ between runs)."""
    return [name for name, method in next(iter(reports.values()))["methods"].items()
            if method.get("kind") != "ensemble member"]


def table(reports: dict[int, dict]) -> str:
    """Markdown: one row per compared method, mean ± sd over seeds of the per-run means over trials."""
    methods = compared_methods(reports)
    lines = ["| method | " + " | ".join(label for _, label, _ in MEASURES) + " |", "|---" * (len(MEASURES) + 1) + "|"]
    for method in methods:
        cells = []
        for key, _, spec in MEASURES:
            values = [r["methods"][method]["aggregate"][key]["mean"] for r in reports.values()]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{format(statistics.mean(values), spec)} ± {format(sd, spec)}")
        base = method.removesuffix(SELECTED)
        lines.append(f"| {LABELS.get(base, base)}{method[len(base):]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_mean(reports: dict[int, dict], method: str, key: str) -> float:
    """The mean over seeds of a method's per-run mean over trials."""
    return statistics.mean(r["methods"][method]["aggregate"][key]["mean"] for r in reports.values())


def margins(reports: dict[int, dict], baseline: str) -> str:
    """The model's lead over `baseline` on each measure, its seeds' means against the baseline's, as issue 14 checks it."""
    cells = []
    for key, label, spec in MEASURES:
        lead = seed_mean(reports, "model", key) - seed_mean(reports, baseline, key)
        if key in LOWER_IS_BETTER:
            lead = -lead
        # A lead that rounds to zero where it is printed is a tie (and `or` turns -0.0 into 0.0).
        shown = float(format(lead, spec)) or 0.0
        verdict = "ahead" if shown > 0 else "level" if shown == 0 else "behind"
        cells.append(f"{label} {format(shown, '+' + spec)} ({verdict})")
    return f"model's lead over {baseline} (lower MSE counts as ahead): " + ", ".join(cells)


def stage_validations(runs: dict[int, dict]) -> str:
    """Each run's best validation PCC of the fMRI path in stages II and III (its metrics.json's `validation`)
    and the stage of the checkpoint it kept: what stage III gained on this data."""
    cells = []
    for seed, run in runs.items():
        stages = run.get("validation", {})
        bests = [f"{stages[name]['best']['pcc_fmri']:.4f}" if name in stages else "-" for name in ("stage2", "stage3")]
        cells.append(f"seed {seed} {' / '.join(bests)} (kept stage {run['stage']})")
    return "best validation PCC (fMRI), stage II / stage III: " + "; ".join(cells)


def main(argv: list[str] | None = None) -> int:
    """Train and evaluate every seed, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs (one sub-folder per seed)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("train_args", nargs="*", help="after --: further train.py arguments")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    reports, times = {}, {}
    for seed in seeds:
        reports[seed], times[seed] = seed_report(seed, args.out, args.train_args)
    print()
    print(table(reports))
    print()
    methods = compared_methods(reports)
    print("per seed, PCC of " + " / ".join(methods) + ": " + "; ".join(
        f"seed {seed} " + " / ".join(f"{r['methods'][m]['aggregate']['pcc']['mean']:.3f}" for m in methods)
        for seed, r in reports.items()
    ))
    for baseline in methods:
        if baseline != "model" and baseline.removesuffix(SELECTED) in LIKE_FOR_LIKE.split(","):
            print(margins(reports, baseline))
    print(stage_validations({seed: json.loads((args.out / f"seed{seed}" / "metrics.json").read_text()) for seed in seeds}))
    print("training wall time: " + ", ".join(
        f"seed {seed} {'(earlier run)' if t is None else f'{t / 60:.1f} min'}" for seed, t in times.items()
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
