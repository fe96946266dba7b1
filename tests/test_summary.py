"""The chain's comparison: one row per model, and a reading that follows this run's numbers."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from rvsl.evaluation.summary import (
    FALLBACK_SELECTION,
    ModelInfo,
    rank_list_comparison,
    selected_model,
    summarize,
    to_markdown,
    write_summary,
)
from rvsl.models.checkpoint import save_net
from rvsl.models.rvsl_net import RVSLNet


def evaluated(maps: dict[str, float], clear_offset: float = 0.0, **extra: float) -> dict:
    """train()-shaped results whose after-fit evaluation has these hazy mAPs (%); rank-1 is
    mAP + 10, the clear branch mAP + ``clear_offset``."""
    values = {}
    for name, value in maps.items():
        for branch, shift in (("hazy", 0.0), ("clear", clear_offset)):
            key = f"val/{name}/{branch}"
            values |= {f"{key}/mAP": (value + shift) / 100, f"{key}/rank1": (value + 10) / 100}
            values[f"{key}/mINP"] = value / 200
    return {"best": values | extra, "selected_model_path": "x.ckpt", "selection": "last epoch (5)"}


MODELS = {
    "clear_only": ModelInfo("baseline", clear_only=True),
    "baseline": ModelInfo("baseline"),
    "baseline_adabn": ModelInfo("adabn", source="baseline"),
    "real_haze": ModelInfo("real_haze", two_branches=True),
}


def chain_results(baseline: float, adabn: float, rvsl: float, clear_only=(50.0, 30.0)) -> dict:
    """A chain's results: the clear-only model's (REAL_CLEAR, REAL_FOGGY) mAP, and the
    REAL_FOGGY mAP of the baseline, its AdaBN and RVSL stage 3."""
    return {
        "clear_only": evaluated({"REAL_CLEAR": clear_only[0], "REAL_FOGGY": clear_only[1]}),
        "baseline": evaluated({"REAL_CLEAR": 55.0, "REAL_FOGGY": baseline, "SYN": 70.0}),
        "baseline_adabn": evaluated({"REAL_CLEAR": 54.0, "REAL_FOGGY": adabn, "SYN": 69.0}),
        "real_haze": evaluated(
            {
                "REAL_CLEAR": 57.0,
                "REAL_FOGGY": rvsl,
                "SYN": 72.0,
                "VAL": 80.0,
                "REAL_HELDOUT": 20.0,
            },
            clear_offset=-3.0,
            **{"val/SYN/dehaze/ssim": 0.81234, "val/SYN/dehaze/psnr": 21.456},
        ),
    }


def test_the_summary_has_one_row_per_model_and_a_clear_branch_table_for_rvsl_models():
    summary = summarize(chain_results(30.0, 33.0, 36.0), MODELS)

    rows = {r["model"]: r for r in summary["rows"]}
    assert list(rows) == ["clear_only", "baseline", "baseline_adabn", "real_haze"]
    # fractions, as logged (the Markdown shows percent)
    assert rows["real_haze"]["hazy"]["REAL_FOGGY"] == {"mAP": 0.36, "rank1": 0.46, "mINP": 0.18}
    assert rows["real_haze"]["clear"]["REAL_FOGGY"]["mAP"] == 0.33
    assert "clear" not in rows["baseline"]  # one encoder: its clear branch is its hazy one
    assert rows["real_haze"]["dehaze"] == {"ssim": 0.8123, "psnr": 21.46}
    assert summary["roles"] == {
        "clear_only": "clear_only",
        "baseline": "baseline",
        "adabn": "baseline_adabn",
        "rvsl": "real_haze",
    }
    markdown = to_markdown(summary)
    hazy_table, clear_table = markdown.split("## Clear branch")[0], markdown.split("## Clear")[1]
    assert (
        "| model | REAL_CLEAR mAP | REAL_CLEAR rank-1 | REAL_FOGGY mAP | REAL_FOGGY rank-1 | "
        "SYN mAP | SYN rank-1 | REAL_HELDOUT mAP | REAL_HELDOUT rank-1 | VAL mAP | VAL rank-1 | "
        "SSIM | PSNR (dB) |"
    ) in hazy_table
    rvsl_line = "| real_haze | 57.00 | 67.00 | 36.00 | 46.00 | 72.00 | 82.00 | 20.00 | 30.00 | "
    baseline_line = "| baseline | 55.00 | 65.00 | 30.00 | 40.00 | 70.00 | 80.00 | – | – | – | – |"
    assert rvsl_line + "80.00 | 90.00 | 0.8123 | 21.46 |" in hazy_table
    assert baseline_line + " – | – |" in hazy_table
    assert "| real_haze |" in clear_table and "| baseline |" not in clear_table
    assert "- baseline_adabn: last epoch (5)" in markdown


def test_the_reading_measures_the_haze_drop_and_rvsls_gaps_from_the_numbers():
    reading = summarize(chain_results(30.0, 33.0, 36.0), MODELS)["reading"]

    assert "Haze hurts" in reading and "50.0 mAP on REAL_CLEAR and 30.0 on REAL_FOGGY" in reading
    assert "a 40% relative drop" in reading
    assert "RVSL stage 3 beats the baseline on REAL_FOGGY by 6.0 mAP points" in reading
    assert "RVSL stage 3 beats AdaBN on REAL_FOGGY by 3.0 mAP points" in reading
    assert "The gap over AdaBN (+3.0) is smaller than the gap over the baseline (+6.0)" in reading
    assert "changes the baseline by +3.0 points" in reading


def test_the_reading_says_plainly_when_rvsl_does_not_win():
    reading = summarize(chain_results(30.0, 33.0, 30.5, clear_only=(50.0, 48.0)), MODELS)["reading"]

    assert "Haze barely matters here" in reading and "a 4% relative drop" in reading
    assert "RVSL stage 3 does not beat the baseline on REAL_FOGGY: they are within 1" in reading
    assert "RVSL stage 3 does not beat AdaBN on REAL_FOGGY: it is 2.5 mAP points behind" in reading
    assert "beats" not in reading.replace("does not beat", "")


def test_ablations_are_read_as_changes_from_rvsl_stage_3():
    results = chain_results(30.0, 33.0, 36.0)
    results["real_haze_no_ea"] = evaluated({"REAL_FOGGY": 34.25})
    models = MODELS | {"real_haze_no_ea": ModelInfo("real_haze", source="real_clear")}

    summary = summarize(results, models)

    assert summary["roles"]["rvsl"] == "real_haze"  # the entry without from:, not the ablation
    assert "change in REAL_FOGGY mAP from RVSL stage 3: real_haze_no_ea -1.8" in summary["reading"]


def test_results_without_a_selection_rule_name_the_best_checkpoint_and_say_it_flatters():
    old = {"best_model_path": "best.ckpt", "best": evaluated({"REAL_FOGGY": 20.0})["best"]}
    new = {"best_model_path": "best.ckpt", "selected_model_path": "last.ckpt", "selection": "x"}
    assert selected_model(old) == ("best.ckpt", FALLBACK_SELECTION)
    assert selected_model(new) == ("last.ckpt", "x")

    summary = summarize({"baseline": old, "real_haze": old})

    assert "baseline, real_haze are the epochs with the best test-set mAP" in summary["reading"]
    assert "does not beat the baseline" in summary["reading"]  # 20.0 vs 20.0: a tie


def test_the_summary_files_hold_the_rows_the_reading_and_a_chart(tmp_path):
    summary = summarize(chain_results(30.0, 33.0, 36.0), MODELS)

    write_summary(summary, tmp_path)

    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["rows"] == summary["rows"] and saved["reading"] == summary["reading"]
    assert saved["thresholds"] == {"haze_hurts_relative_drop": 0.1, "tie_map": 0.01}
    assert summary["reading"] in (tmp_path / "summary.md").read_text()
    chart = Image.open(tmp_path / "summary.png")
    assert chart.mode == "RGB" and chart.width > 300 and chart.height > 200


def test_the_rank_list_comparison_shows_the_same_queries_for_both_checkpoints(tiny_fvrid, tmp_path):
    from rvsl.data.datamodule import RVSLDataModule

    datamodule = RVSLDataModule(
        tiny_fvrid, image_size=(32, 32), num_instances=2, batch_size=6, num_workers=0
    )
    datamodule.setup("validate")
    paths = {}
    for seed, label in enumerate(("baseline", "RVSL")):
        torch.manual_seed(seed)
        paths[label] = tmp_path / f"{label}.ckpt"
        save_net(RVSLNet("resnet18_ibn_a", num_classes=6, generator_width=8), paths[label])

    picture = rank_list_comparison(datamodule, paths, num_queries=3)

    tile, width, height = 34, 2 + 34 * 11, 2 + 34 * 3  # 32-pixel tiles: query + top 10, 3 rows
    assert picture.shape[1] == 2 * width + 12
    lists = picture[-height:]  # under the captions
    left, right = lists[:, :width], lists[:, width + 12 :]
    np.testing.assert_array_equal(left[:, : tile + 2], right[:, : tile + 2])  # same queries
    assert not np.array_equal(left[:, tile + 2 :], right[:, tile + 2 :])  # ranked differently
