"""Query-to-gallery distance matrices for retrieval evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS = ("euclidean", "cosine")


def pairwise_distance(
    query: Tensor,
    gallery: Tensor,
    metric: str = "euclidean",
    normalize: bool = False,
    *,
    chunk_size: int = 4096,
) -> Tensor:
    """(num_query, num_gallery) float32 distances between the rows of two (N, D) feature sets.

    ``"euclidean"`` is the SQUARED Euclidean distance ``|q|^2 + |g|^2 - 2 q.g``, clamped at 0:
    the convention of fast-reid/torchreid evaluation. It ranks exactly like the Euclidean
    distance, and skipping the square root keeps distinct float32 distances distinct.
    ``"cosine"`` is ``1 - cos(q, g)``, in [0, 2]. ``normalize`` L2-normalises both feature sets
    first (then squared Euclidean equals ``2 - 2 cos``). Computed on the inputs' device, in
    float32 (float64 inputs stay float64 until the result), ``chunk_size`` query rows at a time.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            "query and gallery must be (N, D) feature matrices of the same dimension, got "
            f"shapes {tuple(query.shape)} and {tuple(gallery.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    dtype = torch.float64 if torch.float64 in (query.dtype, gallery.dtype) else torch.float32
    query = query.detach().to(dtype)
    gallery = gallery.detach().to(device=query.device, dtype=dtype)
    if normalize or metric == "cosine":
        query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)

    out = torch.empty(len(query), len(gallery), dtype=torch.float32, device=query.device)
    gallery_sq = gallery.pow(2).sum(dim=1)
    with torch.autocast(device_type=query.device.type, enabled=False):
        for start in range(0, len(query), chunk_size):
            q = query[start : start + chunk_size]
            similarity = q @ gallery.t()
            if metric == "cosine":
                dist = 1.0 - similarity
            else:
                dist = (q.pow(2).sum(dim=1, keepdim=True) + gallery_sq) - 2.0 * similarity
            out[start : start + chunk_size] = dist.clamp_min_(0.0)
    return out
