"""The deterministic weight fill of shared/reference/PARITY.md, and the official key list."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def official_keys() -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, dtype) of the official Stage-1 ResNet-50 state dict, in its natural order."""
    with open(REFERENCE / "official_stage1_state_dict.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [
        (r["key"], tuple(int(s) for s in r["shape"].split(",")) if r["shape"] else (), r["dtype"])
        for r in rows
    ]


def fill_value(k: int, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Entry ``k`` of the fill: a function of its index, name and shape only."""
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.int64)
    n = math.prod(shape)
    s = np.sin(0.731 * np.arange(n, dtype=np.float64) + 1.3 * k)
    if key.endswith("running_mean"):
        v = 0.01 * s
    elif key.endswith("running_var"):
        v = 1.0 + 0.1 * (s + 1.0)
    elif key.endswith("bias"):
        v = 0.02 * s
    elif len(shape) == 1:
        v = 1.0 + 0.1 * s
    else:
        v = s * math.sqrt(2.0) * math.sqrt(2.0 / (n / shape[0]))
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def official_filled_state_dict() -> dict[str, torch.Tensor]:
    """The official Stage-1 state dict with every entry set by the fill."""
    return {key: fill_value(k, key, shape) for k, (key, shape, _) in enumerate(official_keys())}
