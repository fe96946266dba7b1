"""Validation curves of a chain: VAL mAP against labelled-data epochs, one line per model.

Each model's epochs are counted from the start of the chain: a model that starts from another
entry's weights continues that entry's count, so the baseline and RVSL, which branch off the same
clear-only model, are compared at equal labelled-data budgets and a reader sees whether each
curve had flattened when it stopped. The curves hold fractions, as logged; the picture shows
percent.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rvsl.evaluation.evaluate import percent
from rvsl.evaluation.pictures import line_chart

VAL_MAP = "val/VAL/hazy/mAP"
CURVES_PICTURE = "val_curves.png"


def read_val_curve(metrics_csv: Path, epochs: int) -> list[tuple[int, float]]:
    """(epoch, VAL mAP as a fraction) of every validation during fitting, epochs counted from 1.
    Rows at epoch ``epochs`` or later are the evaluation after fitting, not a point of the
    curve."""
    if not metrics_csv.is_file():
        return []
    points: dict[int, float] = {}
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get(VAL_MAP) and row.get("epoch") and int(row["epoch"]) < epochs:
                points.setdefault(int(row["epoch"]) + 1, float(row[VAL_MAP]))
    return sorted(points.items())


def chain_offsets(starts: Mapping[str, str | None], epochs: Mapping[str, int]) -> dict[str, int]:
    """Labelled epochs before each model's first epoch: those of the models it continues."""
    offsets: dict[str, int] = {}
    for name, start in starts.items():  # in chain order: a start is always an earlier model
        offsets[name] = offsets[start] + epochs[start] if start in offsets else 0
    return offsets


def val_curves_picture(
    folders: Mapping[str, Path], starts: Mapping[str, str | None], epochs: Mapping[str, int]
) -> np.ndarray | None:
    """The chart of every trained model's VAL curve, mAP in percent; None when no model
    measured VAL."""
    offsets = chain_offsets(starts, epochs)
    series = {
        name: [
            (offsets[name] + e, percent(v))
            for e, v in read_val_curve(folder / "csv" / "metrics.csv", epochs[name])
        ]
        for name, folder in folders.items()
    }
    series = {name: line for name, line in series.items() if line}
    if not series:
        return None
    return line_chart(series, "VAL mAP (%), hazy branch", "labelled-data epochs")
