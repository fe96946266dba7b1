"""A ResNet-IBN-a split as RVSL uses it: encoder (stem + layer1), ReID trunk (layer2-4)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from rvsl.models.resnet_ibn import BackboneSpec, init_resnet_, make_layer


class EncoderOutput(NamedTuple):
    """An encoder's output: the common feature (layer1, 1/4 size), the stem skip (1/2 size)."""

    feature: torch.Tensor
    skip: torch.Tensor


class Encoder(nn.Module):
    """Stem (conv7x7/2, BN, ReLU, maxpool) + layer1 of a ResNet-IBN-a: ``Ec`` and ``Ef``.

    Returns the layer1 map (input to the ReID trunk and the generators) and the
    post-ReLU stem map before max-pooling, the generators' skip connection.
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        w = spec.width
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = make_layer(spec.block, w, w, spec.layers[0], stride=1, ibn=True)
        init_resnet_(self)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        skip = self.relu(self.bn1(self.conv1(images)))
        return EncoderOutput(self.layer1(self.maxpool(skip)), skip)


class ReIDTrunk(nn.Module):
    """layer2-4 of a ResNet-IBN-a (``Dreid``), shared by both branches; output stride 32.

    layer4 always has stride 2, as in the official code (its ``last_stride`` is ignored).
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        w, e = spec.width, spec.block.expansion
        self.layer2 = make_layer(spec.block, w * e, 2 * w, spec.layers[1], stride=2, ibn=True)
        self.layer3 = make_layer(spec.block, 2 * w * e, 4 * w, spec.layers[2], stride=2, ibn=True)
        self.layer4 = make_layer(spec.block, 4 * w * e, 8 * w, spec.layers[3], stride=2, ibn=False)
        init_resnet_(self)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(feature)))
