"""ResNet-IBN-a building blocks (Pan et al., "Two at Once", ECCV 2018).

IBN-a replaces the first BatchNorm of every residual block in layers 1-3 with
an "IBN" layer: the first half of the channels go through InstanceNorm (style
invariance, which helps under haze), the rest through BatchNorm. Layer 4 keeps
plain BatchNorm. Parameter names follow torchvision / the IBN-Net release
(`conv1`, `bn1.IN`, `bn1.BN`, `downsample.0`, ...) so ImageNet weights and the
official RVSL checkpoints load by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn


class IBN(nn.Module):
    """Instance-Batch Norm: IN on the first ``int(planes * ratio)`` channels, BN on the rest."""

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, rest = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(rest.contiguous())], dim=1)


def _norm(planes: int, ibn: bool) -> nn.Module:
    return IBN(planes) if ibn else nn.BatchNorm2d(planes)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); stride on the first conv; IBN-a replaces bn1."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        ibn: bool = False,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(planes, ibn)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (ResNet-50/101, "v1.5": stride on the 3x3 conv); IBN-a replaces bn1."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        ibn: bool = False,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _norm(planes, ibn)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


@dataclass(frozen=True)
class BackboneSpec:
    """Depth of a ResNet-IBN-a: block type, number of blocks in layers 1-4, and the base width
    (channels of the stem and of layer1's planes; 64 is every published ResNet, smaller widths
    make a light network for CPU demos)."""

    block: Block
    layers: tuple[int, int, int, int]
    width: int = 64

    @property
    def encoder_channels(self) -> int:
        """Channels of layer1's output, the encoders' common feature fed to the generators."""
        return self.width * self.block.expansion

    @property
    def feature_dim(self) -> int:
        """Channels of layer4's output, the ReID embedding size."""
        return 8 * self.width * self.block.expansion


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18_ibn_a": BackboneSpec(BasicBlock, (2, 2, 2, 2)),
    "resnet34_ibn_a": BackboneSpec(BasicBlock, (3, 4, 6, 3)),
    "resnet50_ibn_a": BackboneSpec(Bottleneck, (3, 4, 6, 3)),
    "resnet101_ibn_a": BackboneSpec(Bottleneck, (3, 4, 23, 3)),
}


def backbone_spec(name: str, width: int = 64) -> BackboneSpec:
    """Look a backbone up by its config name, with the valid names in the error; ``width`` is
    the base channel count (64: the standard network)."""
    try:
        spec = BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}"
        ) from None
    if width < 8 or width % 8:
        raise ValueError(f"backbone width must be a multiple of 8, at least 8, not {width}")
    return dataclasses.replace(spec, width=width)


def make_layer(
    block: Block, inplanes: int, planes: int, blocks: int, stride: int, ibn: bool
) -> nn.Sequential:
    """One ResNet stage; the first block carries the stride and a 1x1 projection shortcut."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, ibn, downsample)]
    inplanes = planes * block.expansion
    layers += [block(inplanes, planes, 1, ibn) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_resnet_(module: nn.Module) -> None:
    """The official ResNet init: convs ~ N(0, sqrt(2 / (k*k*out))), norm scales 1, shifts 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
