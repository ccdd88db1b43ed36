"""benchmarks/results.py: the README's table over seeds and the model's lead over each like-for-like baseline."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402

MEASURE_KEYS = [key for key, _, _ in results.MEASURES]


def report(**methods: tuple[float, float, float, float]) -> dict:
    """An eval report whose methods have these mean PCC, MSE, SSIM and 2-way."""
    return {"methods": {
        name.replace("_", "-").replace("-voxels", results.SELECTED): {
            "kind": "model" if name == "model" else "baseline",
            "aggregate": {key: {"mean": value} for key, value in zip(MEASURE_KEYS, figures)},
        }
        for name, figures in methods.items()
    }}


REPORTS = {
    0: report(model=(0.86, 0.020, 0.78, 0.989), latent_ridge_voxels=(0.85, 0.021, 0.77, 0.989),
              ridge_voxels=(0.80, 0.019, 0.60, 1.0), ridge=(0.70, 0.040, 0.45, 0.95)),
    1: report(model=(0.84, 0.022, 0.76, 0.989), latent_ridge_voxels=(0.85, 0.021, 0.75, 0.989),
              ridge_voxels=(0.78, 0.031, 0.56, 0.9), ridge=(0.70, 0.040, 0.45, 0.95)),
}


def test_table_gives_mean_and_sd_over_seeds():
    rows = results.table(REPORTS).splitlines()
    assert rows[0] == "| method | PCC | MSE | SSIM | 2-way |"
    model = next(row for row in rows if row.startswith("| **D-VAE/GAN**"))
    assert "0.850 ± 0.014" in model and "0.0210 ± 0.0014" in model and "0.989 ± 0.000" in model
    assert any(row.startswith("| latent-ridge (model's voxels) |") for row in rows)


@pytest.mark.parametrize(("baseline", "expected"), [
    ("latent-ridge" + results.SELECTED,
     ["PCC +0.000 (level)", "MSE +0.0000 (level)", "SSIM +0.010 (ahead)", "2-way +0.000 (level)"]),
    ("ridge" + results.SELECTED,
     ["PCC +0.060 (ahead)", "MSE +0.0040 (ahead)", "SSIM +0.190 (ahead)", "2-way +0.039 (ahead)"]),
])
def test_margins_count_a_lower_mse_as_a_lead(baseline, expected):
    line = results.margins(REPORTS, baseline)
    assert line.startswith(f"model's lead over {baseline}")
    assert [cell.strip() for cell in line.split(": ", 1)[1].split(",")] == expected


def test_stage_validations_show_each_runs_best_of_stages_two_and_three_and_what_it_kept():
    def best(pcc: float) -> dict:
        return {"best": {"pcc_fmri": pcc}, "last": {"pcc_fmri": pcc - 0.01}}

    runs = {0: {"stage": 3, "validation": {"stage1": {"last": {}}, "stage2": best(0.87123), "stage3": best(0.876)}},
            1: {"stage": 2, "validation": {"stage2": best(0.8742)}},
            2: {"stage": 2}}
    assert results.stage_validations(runs) == ("best validation PCC (fMRI), stage II / stage III: "
                                               "seed 0 0.8712 / 0.8760 (kept stage 3); seed 1 0.8742 / - (kept stage 2); "
                                               "seed 2 - / - (kept stage 2)")
