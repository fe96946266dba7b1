"""Which image sizes the network can take, found by running it.

The InstanceNorm half of every ResNet-IBN-a block in layer3 sees the image at 1/16 (``ceil``)
and needs at least 2 positions; the PatchGAN discriminators halve the image four times
(``floor``) and normalise that map too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def image_size_problem(
    size: Sequence[int], setting: str = "data.image_size", discriminators: bool = False
) -> str | None:
    """Why ``size`` (H, W) cannot go through the network, or None when it can.

    ``discriminators``: the run trains the PatchGAN discriminators too (every stage but the
    baseline), which need more than the encoders, trunk and generators.
    """
    if len(size) != 2:
        return f"{setting}={list(size)}: give the image size as [H,W]"
    height, width = (int(s) for s in size)
    shown = f"{setting}=[{height},{width}]"
    if height < 1 or width < 1:
        return f"{shown}: image sizes must be positive (height and width in pixels)"
    if _fits(height, width, discriminators):
        return None
    side = smallest_square_size(discriminators)
    if discriminators:
        return (
            f"{shown} is too small for the PatchGAN discriminators of this stage: they halve the "
            "image 4 times and InstanceNorm needs at least 2 positions of that map, "
            f"floor(H/16) x floor(W/16) >= 2; the smallest sizes are [{side},{side}], [16,32] "
            "and [32,16]"
        )
    return (
        f"{shown} is too small for the network: the InstanceNorm layers of its ResNet-IBN-a "
        "layer3 see the image at 1/16 size and need at least 2 positions, "
        f"ceil(H/16) x ceil(W/16) >= 2; the smallest sizes are [{side},{side}], [16,17] and "
        "[17,16]"
    )


def _fits(height: int, width: int, discriminators: bool) -> bool:
    if discriminators:
        return (height // 16) * (width // 16) >= 2
    return math.ceil(height / 16) * math.ceil(width / 16) >= 2


def smallest_square_size(discriminators: bool = False) -> int:
    """The smallest N for which [N, N] passes :func:`image_size_problem`."""
    return next(n for n in range(1, 1024) if _fits(n, n, discriminators))
