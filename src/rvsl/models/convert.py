"""Import of the authors' released RVSL checkpoints (Stage 1, 2 or 3).

The official ``Stage{1,2,3}_Model`` state dicts name the parts ``Ec``, ``Ef``,
``Dreid``, ``Dc``, ``Df``, ``bottleneck`` and ``classifier`` (``syn_classifier``
in stages 2-3); the generators' blocks are ``DC1..3.double_conv.N`` and ``OutConv``.
This module renames them to :class:`~rvsl.models.rvsl_net.RVSLNet`'s names,
infers the backbone depth and class count from the tensors, and checks that
every expected key group is present.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from rvsl.models.checkpoint import (
    CheckpointError,
    load_untrusted,
    make_checkpoint,
    short_list,
    unwrap_state_dict,
)
from rvsl.models.resnet_ibn import BACKBONES, Bottleneck
from rvsl.models.rvsl_net import RVSLNet
from rvsl.utils.files import atomic_torch_save

# official top-level module -> ours
_PARTS = {
    "Ec": "enc_clear",
    "Ef": "enc_hazy",
    "Dreid": "trunk",
    "Dc": "gen_clear",
    "Df": "gen_hazy",
    "bottleneck": "bnneck",
    "classifier": "classifier",
    "syn_classifier": "classifier",
}
# official generator sub-module -> ours
_GENERATOR_BLOCKS = {
    "DC1.double_conv.": "block1.",
    "DC2.double_conv.": "block2.",
    "DC3.double_conv.": "block3.",
    "OutConv.": "out.",
}
REQUIRED_GROUPS = ("Ec", "Ef", "Dreid", "Dc", "Df", "bottleneck", "classifier|syn_classifier")


def _rename(key: str) -> str:
    """Our name for an official key; keys of unknown parts keep a name no network key has."""
    part, _, rest = key.partition(".")
    ours = _PARTS.get(part)
    if ours is None:
        return f"<unknown>.{key}"
    if part in ("Dc", "Df"):
        for old, new in _GENERATOR_BLOCKS.items():
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
    return f"{ours}.{rest}"


def _missing_groups(keys: set[str]) -> list[str]:
    present = {k.partition(".")[0] for k in keys}
    return [g for g in REQUIRED_GROUPS if not any(alt in present for alt in g.split("|"))]


def infer_backbone(state: Mapping[str, torch.Tensor]) -> str:
    """The backbone name whose block type and per-layer block counts match the official keys."""
    bottleneck = any(k.startswith("Ec.layer1.0.conv3.") for k in state)

    def blocks(prefix: str) -> int:
        pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
        found = [int(m.group(1)) for k in state if (m := pattern.match(k))]
        return max(found) + 1 if found else 0

    layers = (
        blocks("Ec.layer1"),
        blocks("Dreid.layer2"),
        blocks("Dreid.layer3"),
        blocks("Dreid.layer4"),
    )
    for name, spec in BACKBONES.items():
        if (spec.block is Bottleneck) == bottleneck and spec.layers == layers:
            return name
    kind = "bottleneck" if bottleneck else "basic"
    raise CheckpointError(f"no known backbone has {kind} blocks with layer sizes {layers}")


def official_to_net(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> RVSLNet:
    """Build an :class:`RVSLNet` holding the weights of an official RVSL state dict."""
    state = dict(state_dict)
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = _missing_groups(set(state))
    if missing:
        raise CheckpointError(
            f"{source}: not an official RVSL checkpoint: key groups missing: "
            f"{', '.join(missing)} (expected {', '.join(REQUIRED_GROUPS)})"
        )
    official_name = {_rename(k): k for k in state}
    net = RVSLNet(backbone=infer_backbone(state), num_classes=_num_classes(state))
    expected = net.state_dict()
    missing = [k for k in expected if k not in official_name]
    unexpected = [old for new, old in official_name.items() if new not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: does not match the RVSL network ({net.backbone}); missing: "
            f"{short_list(missing)}; unexpected keys: {short_list(sorted(unexpected))}"
        )
    wrong_shape = [
        f"{old} {tuple(state[old].shape)} (expected {tuple(expected[new].shape)})"
        for new, old in official_name.items()
        if state[old].shape != expected[new].shape
    ]
    if wrong_shape:
        raise CheckpointError(f"{source}: tensors of the wrong shape: {short_list(wrong_shape)}")
    net.load_state_dict({new: state[old] for new, old in official_name.items()})
    return net


def _num_classes(state: Mapping[str, torch.Tensor]) -> int:
    weight = state.get("classifier.weight", state.get("syn_classifier.weight"))
    if weight is None or weight.ndim != 2:
        raise CheckpointError("the classifier weight is missing or not a matrix")
    return weight.shape[0]


def load_official(
    state_dict_or_path: Mapping[str, torch.Tensor] | str | os.PathLike[str],
    image_size: tuple[int, int] | None = None,
) -> RVSLNet:
    """The official model as an :class:`RVSLNet` in eval mode (the public parity entry point).

    ``net(clear, hazy)`` then returns ``feat_clear``/``feat_hazy`` (post-BNNeck features)
    and ``gen_clear``/``gen_hazy`` (``Dc(Ef(hazy))`` and ``Df(Ec(clear))``) among its
    outputs. Our generators always return the size of their input; ``image_size``
    (the official model's ``input_shape``), when given, is checked against the input
    at call time so a mismatch with the size the model was trained at is not silent.
    """
    if isinstance(state_dict_or_path, Mapping):
        net = official_to_net(state_dict_or_path)
    else:
        path = str(state_dict_or_path)
        net = official_to_net(unwrap_state_dict(load_untrusted(path), path), path)
    if image_size is not None:
        expected = (int(image_size[0]), int(image_size[1]))

        def check_size(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            for images in args:
                if tuple(images.shape[-2:]) != expected:
                    raise ValueError(
                        f"input of size {tuple(images.shape[-2:])} given to a model built for "
                        f"{expected}"
                    )

        net.register_forward_pre_hook(check_size)
    return net.eval()


def convert_official_checkpoint(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], force: bool = False
) -> RVSLNet:
    """``rvsl-convert``: official ``.pth`` -> this package's checkpoint, written atomically.

    An existing ``dst`` is replaced only with ``force``, and only when it is a checkpoint this
    package wrote (never the official file itself, nor anything else).
    """
    dst = Path(dst)
    if dst.exists() and not force:
        raise CheckpointError(f"{dst}: already exists; pass --force to overwrite it")
    if dst.exists() and (dst.resolve() == Path(src).resolve() or not _rvsl_checkpoint(dst)):
        raise CheckpointError(
            f"{dst}: exists and is not a checkpoint rvsl wrote, so --force does not replace it; "
            "choose another output file"
        )
    net = official_to_net(unwrap_state_dict(load_untrusted(src), str(src)), str(src))
    atomic_torch_save(make_checkpoint(net, source=f"official:{Path(src).name}"), dst)
    return net


def _rvsl_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint in this package's format (read with the safe loader)."""
    try:
        obj = load_untrusted(path)
    except CheckpointError:
        return False
    return isinstance(obj, Mapping) and isinstance(obj.get("rvsl"), Mapping)
