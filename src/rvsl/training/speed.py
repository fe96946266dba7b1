"""Speed options of the module: ``torch.compile`` of the convolutional parts and NHWC batches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn


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
