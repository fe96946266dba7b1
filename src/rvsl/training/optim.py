"""The optimizers of a stage: the main one (network), then one per discriminator, each with its
per-epoch schedule, and the learning-rate rule for many processes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
LR_SCALING = ("none", "linear", "sqrt")


def lr_factor(world_size: int, rule: str) -> float:
    """How much ``rule`` multiplies a one-process learning rate by with ``world_size`` processes.

    The paper's learning rates are for one GPU with ``data.batch_size`` images; with N
    processes the effective batch is N times larger. ``linear`` (Goyal et al., 2017) multiplies
    by N, ``sqrt`` by sqrt(N), ``none`` keeps the paper's values.
    """
    if rule not in LR_SCALING:
        raise ValueError(f"lr_scaling must be one of {LR_SCALING}, not {rule!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, not {world_size}")
    if rule == "linear":
        return float(world_size)
    if rule == "sqrt":
        return math.sqrt(world_size)
    return 1.0


def scaled_lr(lr: float, world_size: int, rule: str) -> float:
    """``lr`` scaled for ``world_size`` processes by ``rule`` (see :func:`lr_factor`)."""
    return lr * lr_factor(world_size, rule)


def default_adam(params: Any, lr: float = 1e-4) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


def _scale(opt: torch.optim.Optimizer, factor: float) -> None:
    for group in opt.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:  # set by a scheduler the factory may have built
            group["initial_lr"] *= factor


def _with_schedule(opt: torch.optim.Optimizer, factory: SchedulerFactory | None) -> dict:
    config: dict[str, Any] = {"optimizer": opt}
    if factory is not None:
        config["lr_scheduler"] = {"scheduler": factory(optimizer=opt), "interval": "epoch"}
    return config


def stage_optimizers(
    main_params: Iterable[nn.Parameter],
    discriminators: Sequence[nn.Module],
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    disc_optimizer: OptimizerFactory,
    disc_scheduler: SchedulerFactory | None,
    factor: float = 1.0,
) -> list[dict[str, Any]]:
    """Lightning's optimizer configs: the main optimizer over ``main_params``, then one per
    discriminator, every learning rate times ``factor`` before its schedule is built."""
    pairs = [(optimizer(params=list(main_params)), scheduler)]
    pairs += [(disc_optimizer(params=d.parameters()), disc_scheduler) for d in discriminators]
    for opt, _ in pairs:
        _scale(opt, factor)
    return [_with_schedule(opt, factory) for opt, factory in pairs]
