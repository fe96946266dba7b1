"""Speed options: which pay on this device, ``torch.compile`` of the convolutional parts, NHWC.

Each option only changes speed, never the maths. ``auto`` (the default of each) takes the
device's choice from :func:`device_defaults`, measured by ``scripts/bench_vs_official.py`` and
``scripts/bench_gpu.sh`` (README, "Speed").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from omegaconf import DictConfig
from torch import Tensor, nn

from rvsl.utils.config import RunConfigError
from rvsl.utils.memory import keep_freed_memory

log = logging.getLogger(__name__)

AUTO = "auto"
MODEL_OPTIONS = ("channels_last", "compile", "fused_optimizers")


def runs_on_gpu(trainer_cfg: DictConfig | Mapping[str, Any]) -> bool:
    """Whether a run of this trainer config will train on a GPU (``accelerator`` auto/gpu/cuda
    and CUDA present)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def device_defaults(on_gpu: bool) -> dict[str, bool]:
    """What ``auto`` means per device, as measured side by side with the official step.

    On a CPU (2 cores, ResNet-50-IBN-a at 128x128) keeping freed memory pays (1.15-1.4x a step);
    NHWC and ``compile`` cost (0.89x, 0.84x); fused Adam is within the noise (1.01-1.03x) and,
    rounding differently, changes a run's result as much as another seed would, so CPUs keep
    the loop Adam (the demo's documented numbers stay reproducible). On GPUs NHWC and
    ``compile`` are what make bf16 pay, and fused Adam saves a kernel launch per parameter.
    Freed-memory keeping (:mod:`rvsl.utils.memory`) is a CPU setting: CUDA tensors live in
    CUDA's own caching allocator.
    """
    return {
        "channels_last": on_gpu,
        "compile": on_gpu,
        "fused_optimizers": on_gpu,
        "keep_freed_memory": not on_gpu,
    }


def resolve(value: Any, option: str, on_gpu: bool) -> bool:
    """``value`` as a bool: ``auto`` becomes the device's choice for ``option``."""
    if isinstance(value, str):
        if value != AUTO:
            raise ValueError(f"{option} must be true, false or {AUTO}, not {value!r}")
        return device_defaults(on_gpu)[option]
    return bool(value)


def resolve_model_options(model_cfg: DictConfig | Mapping[str, Any], on_gpu: bool) -> dict:
    """The model's speed options (:data:`MODEL_OPTIONS`) as bools for this device."""
    return {k: resolve(model_cfg.get(k, AUTO), k, on_gpu) for k in MODEL_OPTIONS}


def apply_host_settings(cfg: DictConfig) -> None:
    """Process-wide settings a run makes at start-up: ``keep_freed_memory`` (``auto``: on CPU
    runs, see :mod:`rvsl.utils.memory`)."""
    try:
        keep = resolve(
            cfg.get("keep_freed_memory", AUTO), "keep_freed_memory", runs_on_gpu(cfg.trainer)
        )
    except ValueError as err:
        raise RunConfigError(str(err)) from None
    if keep and not keep_freed_memory():
        log.info("keep_freed_memory: not glibc, nothing changed")


def compile_in_place(parts: Iterable[nn.Module], options: Mapping[str, Any] | None) -> None:
    """``torch.compile`` each distinct part in place (``nn.Module.compile``): state-dict keys
    are unchanged. Parts, not the whole module: the training step calls them in stage-dependent
    orders with optimizers toggled in between, and the small heads gain nothing from compiling."""
    for part in dict.fromkeys(parts):  # a shared encoder once
        part.compile(**dict(options or {}))


def channels_last_images(batch: Any) -> Any:
    """Every image batch (4-D float tensor) of ``batch`` in NHWC memory order."""

    def nhwc(t: Tensor) -> Tensor:
        is_image = t.dim() == 4 and t.is_floating_point()
        return t.contiguous(memory_format=torch.channels_last) if is_image else t

    return apply_to_collection(batch, Tensor, nhwc)
