"""The global random states of a process, kept in checkpoints so a resumed run draws what an
uninterrupted one would (image-pool swaps, and anything else drawing from the global generators).

Stored as tensors and plain values, which ``torch.load(weights_only=True)`` reads. CUDA: the
state of this process's current device only. Under DDP every rank restores the state rank zero
saved; ranks seeded alike that draw alike (the same code on same-shaped batches) hold equal
states, so that is each rank's own.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def collect_rng_states() -> dict[str, Any]:
    """torch (CPU, and the current CUDA device if CUDA is in use), numpy and python states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the states :func:`collect_rng_states` returned (CUDA's when CUDA is available)."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
