"""ImageNet initialisation of the encoders and the ReID trunk from a local file.

Accepted formats (nothing is ever downloaded):
- an IBN-Net release checkpoint (``resnet50_ibn_a-*.pth``): IBN layers as ``bn1.IN`` / ``bn1.BN``;
- a torchvision ResNet state dict: every ``bn1`` is one BatchNorm. For IBN-a blocks
  its per-channel scale and shift are split: the first half initialises the
  InstanceNorm part, the rest (with its running statistics) the BatchNorm part.
Stem and layer1 go into both encoders, layer2-4 into the trunk; ``fc`` is dropped.
"""

from __future__ import annotations

import os

import torch

from rvsl.models.checkpoint import CheckpointError, load_untrusted, short_list, unwrap_state_dict
from rvsl.models.rvsl_net import RVSLNet

#: The IBN-Net v1.0 release file of each backbone (what ``model.pretrained`` expects).
IBN_RELEASE_FILES = {
    "resnet18_ibn_a": "resnet18_ibn_a-2f571257.pth",
    "resnet34_ibn_a": "resnet34_ibn_a-94bc1577.pth",
    "resnet50_ibn_a": "resnet50_ibn_a-d9d0bb7b.pth",
    "resnet101_ibn_a": "resnet101_ibn_a-59ea0ac6.pth",
}


class PretrainedWeightsError(CheckpointError):
    """The pretrained file does not fit the configured backbone; the message lists the keys."""


def _split_batchnorm_into_ibn(
    state: dict[str, torch.Tensor], backbone_keys: set[str]
) -> dict[str, torch.Tensor]:
    """torchvision's ``X.bn1.*`` -> ``X.bn1.IN.*`` + ``X.bn1.BN.*`` where our block is IBN-a."""
    out = dict(state)
    ibn_prefixes = {k[: -len("IN.weight")] for k in backbone_keys if k.endswith(".bn1.IN.weight")}
    for prefix in ibn_prefixes:  # e.g. "layer1.0.bn1."
        if prefix + "weight" not in out:
            continue
        weight, bias = out.pop(prefix + "weight"), out.pop(prefix + "bias")
        mean, var = out.pop(prefix + "running_mean"), out.pop(prefix + "running_var")
        tracked = out.pop(prefix + "num_batches_tracked", torch.tensor(0))
        half = weight.shape[0] // 2
        out[prefix + "IN.weight"], out[prefix + "IN.bias"] = weight[:half], bias[:half]
        out[prefix + "BN.weight"], out[prefix + "BN.bias"] = weight[half:], bias[half:]
        out[prefix + "BN.running_mean"], out[prefix + "BN.running_var"] = mean[half:], var[half:]
        out[prefix + "BN.num_batches_tracked"] = tracked
    return out


def load_pretrained_backbone(net: RVSLNet, path: str | os.PathLike[str]) -> None:
    """Copy ImageNet ResNet(-IBN-a) weights from ``path`` into both encoders and the trunk.

    Raises :class:`PretrainedWeightsError` listing missing, unexpected and mis-shaped
    keys; an older file without ``num_batches_tracked`` entries is accepted.
    """
    source = str(path)
    state = unwrap_state_dict(load_untrusted(path), source)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}

    targets = {f"enc_clear.{k}": k for k in net.enc_clear.state_dict()}
    targets |= {f"enc_hazy.{k}": k for k in net.enc_hazy.state_dict()}
    targets |= {f"trunk.{k}": k for k in net.trunk.state_dict()}
    backbone_keys = set(targets.values())
    state = _split_batchnorm_into_ibn(state, backbone_keys)

    missing = sorted(
        k for k in backbone_keys if k not in state and not k.endswith("num_batches_tracked")
    )
    unexpected = sorted(k for k in state if k not in backbone_keys)
    if missing or unexpected:
        raise PretrainedWeightsError(
            f"{source}: does not fit backbone {net.backbone!r}; "
            f"missing keys: {short_list(missing)}; "
            f"unexpected keys: {short_list(unexpected)}"
        )
    own = net.state_dict()
    wrong_shape = [
        f"{src} {tuple(state[src].shape)} (expected {tuple(own[dst].shape)})"
        for dst, src in targets.items()
        if src in state and state[src].shape != own[dst].shape
    ]
    if wrong_shape:
        raise PretrainedWeightsError(
            f"{source}: tensors of the wrong shape for backbone {net.backbone!r}: "
            f"{short_list(wrong_shape)}"
        )
    with torch.no_grad():
        for dst, src in targets.items():
            if src in state:
                own[dst].copy_(state[src])
