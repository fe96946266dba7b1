"""Pairwise losses between two tensors of the same shape: embedding alignment and pixel-to-pixel."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def embedding_alignment(feat_a: Tensor, feat_b: Tensor) -> Tensor:
    """Embedding alignment (EA): ``mean |f_a - f_b|``, the L1 distance between the features of
    the clear and the hazy branch for the same vehicle, pulling both encoders into one space.
    Reduced in float32.
    """
    return F.l1_loss(feat_a.float(), feat_b.float())


def reconstruction(pred: Tensor, target: Tensor) -> Tensor:
    """Pixel-to-pixel (P2P) reconstruction: ``mean SmoothL1(pred - target)`` with beta = 1,
    i.e. ``0.5 d^2`` for ``|d| < 1`` and ``|d| - 0.5`` beyond. Used for the supervised
    translations on synthetic pairs and for the cycle reconstructions. Reduced in float32.
    """
    return F.smooth_l1_loss(pred.float(), target.float(), beta=1.0)
