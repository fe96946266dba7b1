"""Specification of the ReID losses: cross entropy (+ label smoothing) and batch-hard triplet."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rvsl.losses import (
    TripletLoss,
    cross_entropy,
    hard_example_mining,
    pairwise_euclidean,
    reid_loss,
)


def slow_batch_hard_triplet(features: torch.Tensor, labels: list[int], margin: float | None):
    """Plain per-anchor reference: python loops, math.dist, anchors lacking a triplet skipped."""
    rows = features.tolist()
    terms = []
    for i, anchor in enumerate(rows):
        pos = [
            math.dist(anchor, rows[j])
            for j in range(len(rows))
            if j != i and labels[j] == labels[i]
        ]
        neg = [math.dist(anchor, rows[j]) for j in range(len(rows)) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        gap = max(pos) - min(neg)
        terms.append(math.log1p(math.exp(gap)) if margin is None else max(0.0, gap + margin))
    return sum(terms) / len(terms) if terms else 0.0


def reference_style_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float):
    """The reference's formulation, valid only for PK batches: every row holds the same number
    of positives (self included), so masked entries can be reshaped to (N, -1)."""
    n = len(labels)
    dist = pairwise_euclidean(features)
    same = labels[:, None] == labels[None, :]
    d_ap = dist[same].view(n, -1).max(dim=1).values
    d_an = dist[~same].view(n, -1).min(dim=1).values
    return F.margin_ranking_loss(d_an, d_ap, torch.ones_like(d_an), margin=margin)


def test_cross_entropy_without_smoothing_is_torch_cross_entropy():
    logits, targets = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_label_smoothing_matches_torch_and_the_smoothed_one_hot_formula():
    torch.manual_seed(0)
    logits, targets, eps = torch.randn(8, 7), torch.randint(0, 7, (8,)), 0.1
    ours = cross_entropy(logits, targets, label_smoothing=eps)
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets, label_smoothing=eps))
    q = (1 - eps) * F.one_hot(targets, 7).float() + eps / 7  # Szegedy et al.'s target
    torch.testing.assert_close(ours, -(q * logits.log_softmax(dim=1)).sum(dim=1).mean())


def test_cross_entropy_of_half_precision_logits_is_computed_in_float32():
    logits, targets = torch.randn(4, 3).to(torch.bfloat16), torch.tensor([0, 1, 2, 0])
    assert cross_entropy(logits, targets).dtype == torch.float32


def test_pairwise_euclidean_matches_cdist_and_floors_self_distance():
    x = torch.randn(5, 4)
    dist = pairwise_euclidean(x)
    off_diagonal = ~torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close(dist[off_diagonal], torch.cdist(x, x)[off_diagonal])
    assert torch.all(dist.diagonal() <= 1e-3)


def test_triplet_on_hand_computed_one_dimensional_points():
    # ids 0,0,1,1 at positions 0,1,3,5: (d_ap, d_an) = (1,3), (1,2), (2,2), (2,4)
    features = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert TripletLoss(margin=0.3)(features, labels).item() == pytest.approx(0.3 / 4, abs=1e-5)
    soft = sum(math.log1p(math.exp(g)) for g in (1 - 3, 1 - 2, 2 - 2, 2 - 4)) / 4
    assert TripletLoss(margin=None)(features, labels).item() == pytest.approx(soft, abs=1e-5)


@pytest.mark.parametrize("margin", [0.3, 1.0, None])
def test_triplet_matches_a_slow_per_anchor_reference_with_uneven_identities(margin):
    torch.manual_seed(1)
    labels = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4]  # id 2 and id 4 are singletons
    features = torch.randn(len(labels), 6)
    ours = TripletLoss(margin)(features, torch.tensor(labels))
    assert ours.item() == pytest.approx(slow_batch_hard_triplet(features, labels, margin), abs=1e-5)


def test_triplet_equals_the_reference_formulation_on_a_pk_batch():
    torch.manual_seed(2)
    labels = torch.arange(4).repeat_interleave(3)  # P=4 identities x K=3 instances
    features = torch.randn(12, 8)
    torch.testing.assert_close(
        TripletLoss(0.3)(features, labels), reference_style_triplet(features, labels, 0.3)
    )


def test_triplet_ignores_anchors_without_a_positive_or_a_negative():
    features = torch.tensor([[0.0], [1.0], [3.0], [9.0]])
    labels = torch.tensor([0, 1, 1, 2])  # anchors 0 and 3 have no positive
    _, _, valid = hard_example_mining(pairwise_euclidean(features), labels)
    assert valid.tolist() == [False, True, True, False]
    # anchor 1: d_ap 2, d_an 1; anchor 2: d_ap 2, d_an 3
    expected = (max(0.0, 2 - 1 + 0.3) + max(0.0, 2 - 3 + 0.3)) / 2
    assert TripletLoss(0.3)(features, labels).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [5, 5, 5, 5]], ids=["all-distinct", "all-same"])
@pytest.mark.parametrize("margin", [0.3, None])
def test_triplet_without_any_valid_anchor_is_zero_with_finite_gradients(labels, margin):
    features = torch.randn(4, 3, requires_grad=True)
    loss = TripletLoss(margin)(features, torch.tensor(labels))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_triplet_gradients_are_finite_for_identical_features():
    features = torch.ones(6, 4, requires_grad=True)
    loss = TripletLoss(0.3)(features, torch.tensor([0, 0, 1, 1, 2, 2]))
    loss.backward()
    assert loss.item() == pytest.approx(0.3, abs=1e-4)
    assert torch.isfinite(features.grad).all()


def test_triplet_pulls_positives_in_and_pushes_negatives_out():
    torch.manual_seed(3)
    features = torch.randn(8, 5, requires_grad=True)
    labels = torch.arange(4).repeat_interleave(2)
    first = TripletLoss(1.0)(features, labels)
    for _ in range(20):
        (grad,) = torch.autograd.grad(TripletLoss(1.0)(features, labels), features)
        features = (features - 0.1 * grad).detach().requires_grad_(True)
    assert TripletLoss(1.0)(features, labels) < first


def test_triplet_distances_stay_float32_under_autocast():
    torch.manual_seed(4)
    features, labels = torch.randn(8, 16), torch.arange(4).repeat_interleave(2)
    expected = TripletLoss(0.3)(features, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = TripletLoss(0.3)(features.to(torch.bfloat16), labels)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=0.05, rtol=0.05)


def test_reid_loss_returns_the_two_named_unweighted_terms():
    torch.manual_seed(5)
    logits, features = torch.randn(6, 3), torch.randn(6, 4)
    targets, triplet = torch.tensor([0, 0, 1, 1, 2, 2]), TripletLoss(0.3)
    terms = reid_loss(logits, features, targets, triplet, label_smoothing=0.1)
    assert set(terms) == {"ce", "triplet"}
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits, targets, label_smoothing=0.1))
    torch.testing.assert_close(terms["triplet"], triplet(features, targets))
