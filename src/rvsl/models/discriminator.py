"""PatchGAN discriminator, one per domain (clear, hazy), trained with least-squares targets."""

from __future__ import annotations

import torch
from torch import nn


def _down(in_channels: int, out_channels: int, normalize: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)]
    if normalize:
        layers.append(nn.InstanceNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class PatchDiscriminator(nn.Module):
    """Four stride-2 conv blocks (IN, no affine, from the second), LeakyReLU 0.2, 1-channel map.

    Output shape (B, 1, H // 16, W // 16): one real/fake score per overlapping patch.
    The asymmetric zero pad (one column left, one row top) keeps the official layout.
    """

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.model = nn.Sequential(
            *_down(in_channels, width, normalize=False),
            *_down(width, width * 2, normalize=True),
            *_down(width * 2, width * 4, normalize=True),
            *_down(width * 4, width * 8, normalize=True),
            nn.ZeroPad2d((1, 0, 1, 0)),
            nn.Conv2d(width * 8, 1, 4, padding=1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official (CycleGAN) init: conv weights ~ N(0, 0.02), biases 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)
