"""Least-squares GAN objective (Mao et al., "Least Squares Generative Adversarial Networks")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LSGANLoss(nn.Module):
    """``L(D(x), real) = mean (D(x) - t)^2`` with ``t = 1`` for real and ``t = 0`` for fake.

    The generator minimises ``L(D(G(z)), real)``; the discriminator minimises the average of
    ``L(D(x), real)`` and ``L(D(G(z)), fake)`` (see :func:`discriminator_loss`). The labels are
    non-persistent buffers: they follow ``.to(device)`` but stay out of checkpoints. The target
    is the label broadcast to the prediction's shape, dtype and device.
    """

    real_label: Tensor
    fake_label: Tensor

    def __init__(self, real_label: float = 1.0, fake_label: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("real_label", torch.tensor(real_label), persistent=False)
        self.register_buffer("fake_label", torch.tensor(fake_label), persistent=False)

    def target_like(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        """The constant target tensor for ``prediction``."""
        label = self.real_label if target_is_real else self.fake_label
        return label.to(device=prediction.device, dtype=prediction.dtype).expand_as(prediction)

    def forward(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        return F.mse_loss(prediction, self.target_like(prediction, target_is_real))


def discriminator_loss(
    disc_real_pred: Tensor, disc_fake_pred: Tensor, gan_loss: nn.Module
) -> Tensor:
    """Discriminator objective ``(L(D(real), 1) + L(D(fake), 0)) / 2``; halving slows D relative
    to G, as in CycleGAN. ``disc_fake_pred`` must come from detached (pooled) fakes.
    """
    return 0.5 * (gan_loss(disc_real_pred, True) + gan_loss(disc_fake_pred, False))
