"""This package's checkpoint format, and safe loading of files from outside.

A checkpoint is a plain dict (a Lightning checkpoint is one too):
``state_dict`` with the network's weights under the ``net.`` prefix (the attribute
name of the network in the LightningModule) and ``rvsl`` with the format version
and the network's constructor arguments, so the network can be rebuilt from the
file alone. Only tensors, numbers, strings, lists and dicts are stored, so every
file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rvsl.models.rvsl_net import RVSLNet
from rvsl.utils.files import atomic_torch_save

FORMAT_VERSION = 1
NET_PREFIX = "net."


class CheckpointError(ValueError):
    """A file that cannot be used as the checkpoint asked for; the message says why."""


def load_untrusted(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` restricted to tensors and plain containers: a pickle cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many kinds of error on foreign bytes
        refused = "Weights only load failed" in str(err) and "Unsupported operand" not in str(err)
        if isinstance(err, pickle.UnpicklingError) and refused:
            raise CheckpointError(
                f"{path}: refused to load: it holds Python objects beyond tensors and plain "
                "containers, which could run code when unpickled; only weights are accepted"
            ) from None
        reason = str(err).split("\n")[0] if "Unsupported operand" not in str(err) else "bad bytes"
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {reason})"
        ) from None


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensors inside a loaded file: plain, or nested under ``state_dict``/``model``,
    with any DataParallel ``module.`` prefix removed."""
    for key in ("state_dict", "model", "net"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: holds no state dict (a mapping of names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def make_checkpoint(net: RVSLNet, **extra: Any) -> dict[str, Any]:
    """A checkpoint dict holding ``net``'s weights and how to rebuild it."""
    state = {NET_PREFIX + k: v.detach().cpu() for k, v in net.state_dict().items()}
    return {"state_dict": state, "rvsl": {"format": FORMAT_VERSION, "net": net.config(), **extra}}


def save_net(net: RVSLNet, path: str | os.PathLike[str], **extra: Any) -> None:
    """Save ``net`` in this package's checkpoint format, atomically (temporary file, fsync,
    rename: :func:`rvsl.utils.files.atomic_torch_save`)."""
    atomic_torch_save(make_checkpoint(net, **extra), path)


def load_net(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> RVSLNet:
    """Rebuild the network stored in a checkpoint of this package (training or ``rvsl-convert``)."""
    ckpt = load_untrusted(path)
    meta = ckpt.get("rvsl") if isinstance(ckpt, Mapping) else None
    if not isinstance(meta, Mapping) or "net" not in meta:
        raise CheckpointError(
            f"{path}: not an rvsl checkpoint (no 'rvsl' section). For an official RVSL "
            f"checkpoint run: rvsl-convert {path} OUT.ckpt"
        )
    net = RVSLNet(**meta["net"])
    prefixed = ckpt.get("state_dict", {})
    state = {k[len(NET_PREFIX) :]: v for k, v in prefixed.items() if k.startswith(NET_PREFIX)}
    expected = net.state_dict()
    mis_shaped = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if mis_shaped:
        raise CheckpointError(
            f"{path}: weights do not fit the network it describes ({meta['net']}); "
            f"{len(mis_shaped)} tensors have other shapes (checkpoint vs network), e.g. "
            f"{short_list(mis_shaped, limit=3)}"
        )
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not fit the network it describes; missing: "
            f"{short_list(result.missing_keys)}; unexpected: {short_list(result.unexpected_keys)}"
        )
    return net.to(map_location)


def wrong_shapes(state: Mapping[str, Any], own: Mapping[str, torch.Tensor]) -> list[str]:
    """``"key (saved shape) (here own shape)"`` for every tensor of ``state`` that ``own`` holds
    with another shape: what a checkpoint that does not fit the network gets named for."""
    return [
        f"{k} {tuple(v.shape)} (here {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
    ]


def short_list(keys: list[str], limit: int = 12) -> str:
    """At most ``limit`` of ``keys``, comma-separated, then how many more; ``none`` if empty."""
    if not keys:
        return "none"
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
