"""RVSL learning-rate schedules from ``torch.optim.lr_scheduler`` classes, stepped per epoch.

How they relate to the official code: the schedule rows of ``docs/method.md``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)


def warmup_multistep(
    optimizer: Optimizer,
    warmup_epochs: int = 10,
    warmup_factor: float = 0.01,
    milestones: Sequence[int] = (20, 30, 45, 60, 75, 90, 105, 120, 135, 150, 165, 180, 195),
    gamma: float = 0.6,
    epoch_offset: int = 0,
) -> LRScheduler:
    """Linear warm-up from ``warmup_factor * lr`` over ``warmup_epochs``, times ``gamma`` at
    each milestone (epochs, counted from the start), in closed form:

    ``lr(e) = lr * w(x) * gamma ** #{m <= x}`` with ``x = e + epoch_offset`` and
    ``w(x) = warmup_factor + (1 - warmup_factor) * x / warmup_epochs`` while ``x < warmup_epochs``,
    else 1. ``epoch_offset`` runs the schedule that many epochs ahead. The official code steps
    its scheduler once before the first epoch and warms up over 200 steps taken once per epoch:
    ``warmup_epochs=200, epoch_offset=1`` reproduces it (the LR then ramps for the whole
    200-epoch stage and stays at or below ~1e-5 for a base of 1e-4).
    """
    if warmup_epochs < 0 or epoch_offset < 0:
        raise ValueError(
            f"warmup_epochs ({warmup_epochs}) and epoch_offset ({epoch_offset}) must be >= 0"
        )
    steps = sorted(int(m) for m in milestones)

    def factor(epoch: int) -> float:
        x = epoch + epoch_offset
        warm = 1.0
        if x < warmup_epochs:
            warm = warmup_factor + (1.0 - warmup_factor) * x / warmup_epochs
        return warm * gamma ** bisect_right(steps, x)

    return LambdaLR(optimizer, factor)


def linear_decay(
    optimizer: Optimizer, decay_start: int = 100, max_epochs: int = 200
) -> LRScheduler:
    """Constant LR until ``decay_start``, then linear decay to 0 at ``max_epochs`` (CycleGAN)."""
    decay_epochs = max(max_epochs - decay_start, 1)
    if decay_start <= 0:
        return LinearLR(optimizer, 1.0, 0.0, total_iters=decay_epochs)
    return SequentialLR(
        optimizer,
        [
            ConstantLR(optimizer, 1.0, total_iters=decay_start),
            LinearLR(optimizer, 1.0, 0.0, total_iters=decay_epochs),
        ],
        milestones=[decay_start],
    )
