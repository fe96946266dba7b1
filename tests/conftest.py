"""Shared test set-up: small thread count for 2-core CI, and the parity reference folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # helper modules such as official_fill

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``shared/reference`` beside the checkout (CI places ``shared/`` next to the clone)."""
    from official_fill import REFERENCE

    if not (REFERENCE / "parity_64.npz").is_file():
        pytest.fail(f"parity fixture not found at {REFERENCE}; check out shared/ beside the repo")
    return REFERENCE
