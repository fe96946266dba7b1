"""Specification of the least-squares GAN loss and the discriminator objective."""

from __future__ import annotations

import pytest
import torch

from rvsl.losses import LSGANLoss, discriminator_loss


def test_lsgan_loss_against_real_is_the_mean_squared_distance_to_one():
    pred = torch.tensor([[0.0, 0.5], [1.0, 2.0]])
    assert LSGANLoss()(pred, True).item() == pytest.approx((1 + 0.25 + 0 + 1) / 4)


def test_lsgan_loss_against_fake_is_the_mean_squared_distance_to_zero():
    pred = torch.tensor([[0.0, 0.5], [1.0, 2.0]])
    assert LSGANLoss()(pred, False).item() == pytest.approx((0 + 0.25 + 1 + 4) / 4)


def test_lsgan_target_takes_the_prediction_shape_and_dtype():
    gan = LSGANLoss()
    pred = torch.rand(2, 1, 3, 5, dtype=torch.float64)
    target = gan.target_like(pred, True)
    assert target.shape == pred.shape and target.dtype == torch.float64
    assert gan(pred, False).dtype == torch.float64


def test_lsgan_labels_are_buffers_kept_out_of_checkpoints():
    gan = LSGANLoss(real_label=0.9, fake_label=0.1)
    assert {name for name, _ in gan.named_buffers()} == {"real_label", "fake_label"}
    assert gan.state_dict() == {}
    assert gan.target_like(torch.zeros(3), True).tolist() == pytest.approx([0.9] * 3)


def test_lsgan_labels_follow_the_module_to_another_dtype():
    gan = LSGANLoss().to(torch.float64)
    assert gan.real_label.dtype == torch.float64


def test_discriminator_loss_is_zero_for_a_perfect_discriminator():
    real, fake = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert discriminator_loss(real, fake, LSGANLoss()).item() == 0.0


def test_discriminator_loss_averages_the_real_and_the_fake_terms():
    real, fake = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 3.0)
    # (MSE(0, 1) + MSE(3, 0)) / 2 = (1 + 9) / 2
    assert discriminator_loss(real, fake, LSGANLoss()).item() == pytest.approx(5.0)


def test_discriminator_loss_sends_gradients_to_both_predictions():
    real = torch.rand(2, 1, 3, 3, requires_grad=True)
    fake = torch.rand(2, 1, 3, 3, requires_grad=True)
    discriminator_loss(real, fake, LSGANLoss()).backward()
    # d/dp 0.5 * mean((p - t)^2) = (p - t) / numel
    torch.testing.assert_close(real.grad, (real.detach() - 1) / real.numel())
    torch.testing.assert_close(fake.grad, fake.detach() / fake.numel())
