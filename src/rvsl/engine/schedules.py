"""RVSL learning-rate schedules from ``torch.optim.lr_scheduler`` classes, stepped per epoch."""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    ConstantLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
)


def warmup_multistep(
    optimizer: Optimizer,
    warmup_epochs: int = 10,
    warmup_factor: float = 0.01,
    milestones: Sequence[int] = (20, 30, 45, 60, 75, 90, 105, 120, 135, 150, 165, 180, 195),
    gamma: float = 0.6,
) -> LRScheduler:
    """Linear warm-up from ``warmup_factor * lr`` over ``warmup_epochs``, times ``gamma`` at
    each milestone (epochs, counted from the start). The official code used a 200-step
    warm-up stepped per epoch, i.e. ``warmup_epochs=200``: the LR ramps for the whole run.
    """
    schedules: list[LRScheduler] = [MultiStepLR(optimizer, list(milestones), gamma)]
    if warmup_epochs > 0:
        warmup = LinearLR(optimizer, warmup_factor, 1.0, total_iters=warmup_epochs)
        schedules.insert(0, warmup)
    return ChainedScheduler(schedules, optimizer=optimizer)


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
