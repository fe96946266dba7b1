"""Re-identification losses: (label-smoothed) cross entropy and the batch-hard triplet loss.

Together they form ``Lreid(x, y) = CE(logits, y) + Triplet_batchhard(feat, y)``, the supervised
ReID objective RVSL applies to both the clear and the hazy branch on labeled synthetic pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Identity classification loss, optionally label-smoothed (Szegedy et al., CVPR 2016).

    ``CE = -sum_k q_k log softmax(logits)_k`` with ``q = (1 - eps) onehot(y) + eps / K``: the
    "CrossEntropyLabelSmooth" of the ReID strong baseline, which is exactly torch's
    ``label_smoothing``. Computed in float32 so half-precision logits do not lose the softmax.
    """
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def pairwise_euclidean(features: Tensor) -> Tensor:
    """(N, N) Euclidean distances between the rows of ``features`` (N, D), in float32.

    ``d_ij = sqrt(max(|x_i|^2 + |x_j|^2 - 2 x_i.x_j, 1e-12))``; the floor keeps the gradient of
    the square root finite at zero distance. Autocast is switched off so the Gram matrix (and
    its cancellation-prone subtraction) stays in float32.
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        x = features.float()
        sq = x.pow(2).sum(dim=1)
        dist2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
        return dist2.clamp(min=1e-12).sqrt()


def hard_example_mining(dist: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per anchor, the hardest positive and the hardest negative distance (batch-hard mining).

    ``d_ap(i) = max_{j != i, y_j = y_i} d_ij`` and ``d_an(i) = min_{y_j != y_i} d_ij``, taken with
    masked max/min over the whole (N, N) matrix, so identities may have any number of samples.
    Returns ``(d_ap, d_an, valid)``: ``valid[i]`` is False when anchor i has no positive other
    than itself or no negative; its two distances are then set to 0 (and carry no gradient).
    """
    same = targets[:, None] == targets[None, :]
    eye = torch.eye(len(targets), dtype=torch.bool, device=dist.device)
    is_pos = same & ~eye
    is_neg = ~same
    valid = is_pos.any(dim=1) & is_neg.any(dim=1)
    d_ap = dist.masked_fill(~is_pos, float("-inf")).max(dim=1).values
    d_an = dist.masked_fill(~is_neg, float("inf")).min(dim=1).values
    zero = dist.new_zeros(())
    return torch.where(valid, d_ap, zero), torch.where(valid, d_an, zero), valid


class TripletLoss(nn.Module):
    """Batch-hard triplet loss on Euclidean distances (Hermans et al., "In Defense of the
    Triplet Loss for Person Re-Identification", 2017).

    With a margin m: ``mean_i max(0, d_ap(i) - d_an(i) + m)`` (a margin ranking loss).
    With ``margin=None``, the soft-margin variant ``mean_i softplus(d_ap(i) - d_an(i))``.
    The mean runs over valid anchors only (those with a positive besides themselves and a
    negative); with none valid the loss is 0, still attached to the graph. In a PK batch every
    anchor is valid and this equals the reference implementation.
    """

    def __init__(self, margin: float | None = 0.3) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, features: Tensor, targets: Tensor) -> Tensor:
        d_ap, d_an, valid = hard_example_mining(pairwise_euclidean(features), targets)
        gap = d_ap - d_an
        per_anchor = F.softplus(gap) if self.margin is None else F.relu(gap + self.margin)
        per_anchor = torch.where(valid, per_anchor, per_anchor.new_zeros(()))
        return per_anchor.sum() / valid.sum().clamp(min=1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


def reid_loss(
    logits: Tensor,
    features: Tensor,
    targets: Tensor,
    triplet: TripletLoss,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    """The two unweighted terms of ``Lreid``: ``{"ce": CE(logits, y), "triplet": T(feat, y)}``.

    ``features`` are the pre-BNNeck pooled features (the triplet space), ``logits`` the
    classifier output. The caller weights and sums them (and can log them separately).
    """
    return {
        "ce": cross_entropy(logits, targets, label_smoothing=label_smoothing),
        "triplet": triplet(features, targets),
    }
