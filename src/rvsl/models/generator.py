"""The image translators ``Dc`` (to clear: dehaze) and ``Df`` (to hazy): small U-Net decoders.

From an encoder's layer1 map (1/4 size) and its stem skip (1/2 size) back to a
3-channel image at exactly the input size, any size, non-square included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def double_conv(
    in_channels: int, out_channels: int, mid_channels: int | None = None
) -> nn.Sequential:
    """(conv3x3 with bias -> BN -> ReLU) x 2, the U-Net unit."""
    mid = mid_channels or out_channels
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, 3, padding=1),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def upsample_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear x2 (align_corners=True), then zero-pad or crop to ``size``.

    The pad split matches the official decoder: left/top get ``d // 2`` (floor),
    so when the target is one pixel smaller the FIRST row/column is removed.
    """
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
    dy, dx = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dy or dx:
        top, left = _floor_half(dy), _floor_half(dx)
        x = F.pad(x, [left, dx - left, top, dy - top])
    return x


def _floor_half(d: int) -> int:
    """``d // 2`` written with non-negative operands only.

    Under ONNX tracing ``d`` is a traced shape and ``//`` exports as ONNX ``Div``, which
    truncates toward zero: ``-1 // 2`` would become 0 and crop the wrong row.
    """
    return d // 2 if d >= 0 else -((1 - d) // 2)


class Generator(nn.Module):
    """U-Net decoder: DC(feature) -> up -> cat[skip, up] -> DC -> up -> DC -> 1x1 conv.

    The output has no activation (as in the official model); losses compare it
    with images in [0, 1].
    """

    def __init__(self, in_channels: int, width: int = 64, skip_channels: int = 64) -> None:
        super().__init__()
        self.block1 = double_conv(in_channels, width)
        self.block2 = double_conv(skip_channels + width, width)
        self.block3 = double_conv(width, width)
        self.out = nn.Conv2d(width, 3, 1)

    def forward(
        self, feature: torch.Tensor, skip: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """``size`` is the (H, W) of the image the encoder saw; the output has exactly that size."""
        x = upsample_to(self.block1(feature), (skip.shape[-2], skip.shape[-1]))
        x = self.block2(torch.cat([skip, x], dim=1))
        x = upsample_to(x, size)
        return self.out(self.block3(x))
