"""Specification of the two pairwise losses: embedding alignment (L1) and P2P (SmoothL1)."""

from __future__ import annotations

import pytest
import torch

from rvsl.losses import embedding_alignment, reconstruction


def test_embedding_alignment_is_the_mean_absolute_difference():
    a = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    b = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    assert embedding_alignment(a, b).item() == pytest.approx((1 + 0 + 0 + 3) / 4)


def test_embedding_alignment_of_identical_features_is_zero():
    a = torch.randn(4, 8)
    assert embedding_alignment(a, a.clone()).item() == 0.0


def test_reconstruction_is_quadratic_below_one_and_linear_above():
    pred = torch.tensor([0.5, 3.0])
    target = torch.zeros(2)
    # 0.5 * 0.5^2 = 0.125 and 3 - 0.5 = 2.5
    assert reconstruction(pred, target).item() == pytest.approx((0.125 + 2.5) / 2)


def test_reconstruction_reduces_half_precision_images_in_float32():
    pred = torch.rand(2, 3, 32, 16).to(torch.bfloat16)
    assert reconstruction(pred, torch.zeros_like(pred)).dtype == torch.float32
    assert embedding_alignment(pred, pred).dtype == torch.float32


def test_reconstruction_gradient_reaches_the_prediction():
    pred = torch.rand(2, 3, 8, 4, requires_grad=True)
    reconstruction(pred, torch.rand(2, 3, 8, 4)).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
