"""The optimizers of a stage: the main one (network), then one per discriminator, each with its
per-epoch schedule, and the learning-rate rule for many processes."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)
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


def default_adam(params: Any, lr: float = 1e-4, **kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, **kwargs)


def takes_fused(factory: OptimizerFactory) -> bool:
    """Whether ``factory`` accepts ``fused=`` (torch's Adam, AdamW, SGD and partials of them)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "fused" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def build_optimizer(
    factory: OptimizerFactory, params: Any, fused: bool = False
) -> torch.optim.Optimizer:
    """``factory(params=...)``, with ``fused=True`` when asked and the factory takes it: one
    kernel updates every parameter instead of a Python loop over them (the same update; CPUs
    since torch 2.4, GPUs). A factory that sets ``fused`` itself keeps its choice."""
    keywords = getattr(factory, "keywords", {}) or {}
    if fused and "fused" not in keywords and "foreach" not in keywords:
        if takes_fused(factory):
            return factory(params=params, fused=True)
        log.info("%s has no fused implementation: stepped as it is", factory)
    return factory(params=params)


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
    fused: bool = False,
) -> list[dict[str, Any]]:
    """Lightning's optimizer configs: the main optimizer over ``main_params``, then one per
    discriminator, every learning rate times ``factor`` before its schedule is built;
    ``fused``: fused implementations where the factories have one (:func:`build_optimizer`)."""
    pairs = [(build_optimizer(optimizer, list(main_params), fused), scheduler)]
    pairs += [
        (build_optimizer(disc_optimizer, list(d.parameters()), fused), disc_scheduler)
        for d in discriminators
    ]
    for opt, _ in pairs:
        _scale(opt, factor)
    return [_with_schedule(opt, factory) for opt, factory in pairs]
