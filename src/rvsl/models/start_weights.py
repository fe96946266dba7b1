"""The weights a training run starts from: ImageNet for the encoders and trunk, or an earlier
stage's checkpoint for the whole network and, optionally, its classifier and discriminators."""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import nn

from rvsl.models.checkpoint import CheckpointError, load_untrusted, short_list, wrong_shapes
from rvsl.models.pretrained import load_pretrained_backbone

SCRATCH = "scratch"  # model.pretrained=scratch: random initialisation, said explicitly
DISCRIMINATORS = ("disc_clear.", "disc_hazy.")


def load_earlier_stage(
    model: nn.Module,
    path: str | os.PathLike[str],
    classifier: bool = True,
    discriminators: bool = True,
) -> None:
    """Copy an earlier stage's network into ``model`` (a module with ``net`` and the
    discriminators ``disc_clear`` / ``disc_hazy``), and its classifier and discriminators
    (when present) unless told to keep ``model``'s freshly initialised ones."""
    ckpt = load_untrusted(path)
    state = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not any(k.startswith("net.") for k in state):
        raise CheckpointError(
            f"{path}: not an rvsl checkpoint (no network weights); convert official "
            "checkpoints first with rvsl-convert"
        )
    own = model.state_dict()
    parts = ("net.", *DISCRIMINATORS) if discriminators else ("net.",)
    fresh = () if classifier else ("net.classifier.",)
    wanted = {k: v for k, v in state.items() if k.startswith(parts) and not k.startswith(fresh)}
    wrong = wrong_shapes(wanted, own)
    missing = [
        k for k in own if k.startswith("net.") and not k.startswith(fresh) and k not in wanted
    ]
    if wrong or missing:
        net = model.net
        raise CheckpointError(
            f"{path}: does not fit this network ({net.backbone}, {net.num_classes} classes); "
            f"wrong shapes: {short_list(wrong)}; missing: {short_list(missing)}"
        )
    model.load_state_dict(wanted, strict=False)


def load_start_weights(
    model: nn.Module,
    pretrained: str | None = None,
    init_from: str | None = None,
    inherit: Mapping[str, bool] | None = None,
) -> None:
    """ImageNet weights from ``pretrained`` (a local file; None or ``scratch``: random), then
    an earlier stage from ``init_from`` on top, passing on what ``inherit`` says."""
    if pretrained and pretrained != SCRATCH:
        load_pretrained_backbone(model.net, pretrained)
    if init_from:
        load_earlier_stage(model, init_from, **(inherit or {}))
