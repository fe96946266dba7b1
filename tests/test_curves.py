"""Validation curves: VAL mAP per labelled-data epoch, each model continuing the count of the
model it starts from."""

from __future__ import annotations

import csv
from pathlib import Path

from rvsl.evaluation.curves import chain_offsets, read_val_curve, val_curves_picture


def write_metrics(folder: Path, rows: list[dict[str, str]]) -> None:
    (folder / "csv").mkdir(parents=True)
    with (folder / "csv" / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", "step", "val/VAL/hazy/mAP", "train/loss"])
        writer.writeheader()
        writer.writerows(rows)


def test_a_curve_is_the_validations_during_fitting_as_fractions_counted_from_one(tmp_path):
    write_metrics(
        tmp_path,
        [
            {"epoch": "0", "step": "4", "train/loss": "3.0"},
            {"epoch": "0", "step": "9", "val/VAL/hazy/mAP": "0.25"},
            {"epoch": "1", "step": "19", "val/VAL/hazy/mAP": "0.5"},
            {"epoch": "2", "step": "19", "val/VAL/hazy/mAP": "0.5"},  # the evaluation after fit
        ],
    )
    assert read_val_curve(tmp_path / "csv" / "metrics.csv", epochs=2) == [(1, 0.25), (2, 0.5)]
    assert read_val_curve(tmp_path / "missing.csv", epochs=2) == []


def test_a_model_continues_the_epoch_count_of_the_model_it_starts_from():
    starts = {"clear_only": None, "baseline": "clear_only", "syn_haze": "clear_only",
              "real_clear": "syn_haze", "real_haze": "real_clear"}  # fmt: skip
    epochs = {"clear_only": 10, "baseline": 4, "syn_haze": 2, "real_clear": 1, "real_haze": 1}
    assert chain_offsets(starts, epochs) == {
        "clear_only": 0, "baseline": 10, "syn_haze": 10, "real_clear": 12, "real_haze": 13,
    }  # fmt: skip


def test_the_picture_has_a_line_per_model_that_validated(tmp_path):
    val = "val/VAL/hazy/mAP"
    write_metrics(tmp_path / "a", [{"epoch": "0", val: "0.3"}, {"epoch": "1", val: "0.4"}])
    write_metrics(tmp_path / "b", [{"epoch": "0", "step": "1", "train/loss": "1.0"}])
    folders = {"a": tmp_path / "a", "b": tmp_path / "b"}
    picture = val_curves_picture(folders, {"a": None, "b": "a"}, {"a": 2, "b": 1})
    assert picture is not None and picture.ndim == 3 and picture.shape[2] == 3
    assert val_curves_picture({"b": tmp_path / "b"}, {"b": None}, {"b": 1}) is None
