"""The official main learning-rate schedule, restated from its definition for the tests."""

from __future__ import annotations

# SOLVER.STEPS of the official configs/FVRID.yml
OFFICIAL_MILESTONES = (20, 30, 45, 60, 75, 90, 105, 120, 135, 150, 165, 180, 195, 210, 225)
OFFICIAL_MILESTONES += (240, 255)  # past epoch 200: never reached in a stage


def official_lr(base_lr: float, epoch: int) -> float:
    """WarmupMultiStepLR(factor 0.01, 200 iterations, linear, gamma 0.6), stepped once at
    start-up and then once per epoch, so epoch ``e`` trains at its value for ``e + 1``."""
    last_epoch = epoch + 1
    warmup = 1.0
    if last_epoch < 200:
        alpha = last_epoch / 200
        warmup = 0.01 * (1 - alpha) + alpha
    return base_lr * warmup * 0.6 ** sum(m <= last_epoch for m in OFFICIAL_MILESTONES)
