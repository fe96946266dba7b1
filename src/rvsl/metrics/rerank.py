"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) of a query-to-gallery distance matrix.

The standard ReID post-processing of the original authors' code, torchreid and fast-reid,
rewritten with sparse neighbour sets and row chunks so that memory grows with the number of
probes times k, plus the (num_query, num_gallery) result, instead of several (N, N) matrices.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from rvsl.metrics.distance import METRICS

DEFAULT_CHUNK_SIZE = 256
"""Probe (or query) rows per step; a step holds about ``chunk_size x N`` floats."""


def k_reciprocal_rerank(
    query: Tensor,
    gallery: Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    metric: str = "euclidean",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """(num_query, num_gallery) float32 CPU re-ranked distances from (N, D) feature matrices.

    Follows the reference ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)``
    over all N = num_query + num_gallery probes: the original distance is
    :func:`~rvsl.metrics.distance.pairwise_distance` (``"euclidean"``: squared Euclidean;
    ``"cosine"``: ``1 - cos``, which the normalisation makes equal to fast-reid's ``2 - 2 cos``)
    divided, for each probe, by its largest distance to any probe; the k-reciprocal set of each
    probe (top ``k1 + 1``) is expanded by the reciprocal sets (top ``round(k1 / 2) + 1``) of its
    members that overlap it by more than 2/3, weighted by ``exp(-distance)``, averaged over the
    top ``k2`` neighbours (query expansion, skipped when ``k2 == 1``) and compared by Jaccard
    distance; the result is ``jaccard * (1 - lambda_value) + original * lambda_value``.
    Deviations: ties in every ranking are broken by probe index (the reference's argsort is not
    stable); a probe whose distances are all 0 is normalised by 1 instead of giving NaN; and
    the squared Euclidean distance is not squared again (torchreid squares its already squared
    distance matrix; the authors' code squares plain Euclidean distances, as here).

    Memory, never an (N, N) matrix: growing with N, a float64 copy of the features, the
    O(N (k1 + k2)) nearest-neighbour indices and sparse weight vectors with O(N k1) nonzeros
    (O(N k1 k2) after query expansion); per step, O(chunk_size x N) (a block of distance rows, or
    at most ``chunk_size * N // 4`` Jaccard terms); and the Q x G float32 result. Computed on
    the features' device, returned on the CPU.
    """
    _validate(query, gallery, k1, k2, lambda_value, metric, chunk_size)
    k1, k2, chunk_size, lambda_value = int(k1), int(k2), int(chunk_size), float(lambda_value)
    device = query.device
    dtype = torch.promote_types(query.dtype, gallery.dtype)
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    feats = torch.cat([query.detach().to(dtype), gallery.detach().to(device=device, dtype=dtype)])
    num_query, num = len(query), len(feats)

    distance = _Distance(feats, metric)
    rank, row_max = _initial_rank(distance, min(num, max(k1 + 1, k2)), chunk_size)
    weights = _k_reciprocal_weights(distance, rank, row_max, k1, chunk_size)
    if k2 != 1:
        weights = _query_expansion(weights, rank[:, : min(k2, num)], chunk_size)
    del rank
    return _blend(distance, num_query, weights, row_max, lambda_value, chunk_size)


def _validate(query, gallery, k1, k2, lambda_value, metric, chunk_size) -> None:
    if not isinstance(query, Tensor) or not isinstance(gallery, Tensor):
        raise ValueError(
            f"query and gallery must be torch tensors, got {type(query).__name__} and "
            f"{type(gallery).__name__}"
        )
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            "query and gallery must be (N, D) feature matrices of the same dimension, got "
            f"shapes {tuple(query.shape)} and {tuple(gallery.shape)}"
        )
    if len(query) == 0 or len(gallery) == 0 or query.shape[1] == 0:
        raise ValueError(
            "re-ranking needs at least one query, one gallery item and one feature dimension, "
            f"got shapes {tuple(query.shape)} and {tuple(gallery.shape)}"
        )
    for name, feats in (("query", query), ("gallery", gallery)):
        if feats.is_floating_point() and not torch.isfinite(feats).all():
            raise ValueError(f"{name} features contain NaN or infinite values")
    for name, value in (("k1", k1), ("k2", k2)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(lambda_value, numbers.Real) or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be a number in [0, 1], got {lambda_value!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")


class _Distance:
    """Original distances between probes, one block at a time, by ``pairwise_distance``'s rules."""

    def __init__(self, feats: Tensor, metric: str) -> None:
        self.feats = F.normalize(feats, dim=1) if metric == "cosine" else feats
        self.metric = metric
        self.squared_norms = self.feats.pow(2).sum(dim=1)
        exact = feats.double()
        self.exact = F.normalize(exact, dim=1) if metric == "cosine" else exact

    def block(self, rows: slice, cols: slice) -> Tensor:
        """float32 (rows, cols) distances; one matrix product, updated in place."""
        a, b = self.feats[rows], self.feats[cols]
        with torch.autocast(device_type=a.device.type, enabled=False):
            if self.metric == "cosine":
                out = torch.ones(len(a), len(b), dtype=a.dtype, device=a.device)
                out.addmm_(a, b.t(), alpha=-1.0)
            else:
                out = self.squared_norms[rows, None] + self.squared_norms[cols]
                out.addmm_(a, b.t(), alpha=-2.0)
        return out.clamp_min_(0.0).float()

    def pairs(self, ids: Tensor, others: Tensor) -> Tensor:
        """float64 distances from probe ``ids[i]`` to each probe ``others[i, j]``."""
        a, b = _take(self.exact, ids)[:, None, :], _take(self.exact, others)
        if self.metric == "cosine":
            return (1.0 - (a * b).sum(-1)).clamp_min(0.0)
        return (a - b).pow(2).sum(-1)


def _initial_rank(distance: _Distance, top: int, chunk_size: int) -> tuple[Tensor, Tensor]:
    """The ``top`` nearest probes of every probe (stable) and each probe's largest distance."""
    num, device = len(distance.feats), distance.feats.device
    rank = torch.empty(num, top, dtype=torch.long, device=device)
    row_max = torch.empty(num, dtype=torch.float32, device=device)
    everything = slice(0, num)
    for start in range(0, num, chunk_size):
        rows = slice(start, start + chunk_size)
        dist = distance.block(rows, everything)
        peak = dist.amax(dim=1)
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))
        dist /= peak[:, None]  # the reference ranks the normalised distances
        rank[rows] = _smallest_stable(dist, top)
        row_max[rows] = peak
        del dist
    return rank, row_max


def _smallest_stable(dist: Tensor, k: int) -> Tensor:
    """Column indices of the ``k`` smallest entries of each row, ties broken by column index."""
    # one extra neighbour tells whether an unselected entry ties the k-th value
    values, cols = dist.topk(min(k + 1, dist.shape[1]), dim=1, largest=False)
    doubtful = (values[:, k] == values[:, k - 1]) if k < dist.shape[1] else None
    kth = values[:, k - 1 : k]
    values, cols = values[:, :k], cols[:, :k]
    cols, by_column = cols.sort(dim=1)  # the order of ties from topk is unspecified
    values = values.gather(1, by_column)
    cols = cols.gather(1, values.sort(dim=1, stable=True).indices)
    if doubtful is not None and bool(doubtful.any()):
        doubtful = doubtful.nonzero().flatten()
        cols[doubtful] = _smallest_stable_by_sorting(dist[doubtful], kth[doubtful], k)
    return cols


def _smallest_stable_by_sorting(dist: Tensor, kth: Tensor, k: int) -> Tensor:
    """``_smallest_stable`` for rows with ties at the k-th value: sorts every candidate."""
    rows, cols = (dist <= kth).nonzero(as_tuple=True)  # row-major: columns ascending
    order = torch.sort(dist[rows, cols], stable=True).indices
    order = order[torch.sort(rows[order], stable=True).indices]
    counts = torch.bincount(rows, minlength=len(dist))
    starts = counts.cumsum(0) - counts
    return cols[order[starts[:, None] + torch.arange(k, device=dist.device)]]


def _take(source: Tensor, index: Tensor) -> Tensor:
    """``source[index]`` for an integer index tensor (index_select: much faster on CPU)."""
    return source.index_select(0, index.reshape(-1)).view(*index.shape, *source.shape[1:])


def _k_reciprocal_weights(
    distance: _Distance, rank: Tensor, row_max: Tensor, k1: int, chunk_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The reference's V as CSR arrays ``(crow, col, val)``: expanded k-reciprocal sets."""
    num, device = len(rank), rank.device
    near = rank[:, : min(num, k1 + 1)].contiguous()
    half = rank[:, : min(num, round(k1 / 2) + 1)].contiguous()  # round half to even: np.around
    chunks = [
        (ids, slice(int(ids[0]), int(ids[-1]) + 1))
        for ids in _arange(num, device).split(chunk_size)
    ]
    # half_reciprocal[c, s]: probe half[c, s] has c among its own first len(half) neighbours
    half_reciprocal = torch.cat(
        [(_take(half, half[rows]) == ids[:, None, None]).any(-1) for ids, rows in chunks]
    )
    counts, cols, vals = [], [], []
    for ids, rows in chunks:
        forward = near[rows]
        reciprocal = (_take(near, forward) == ids[:, None, None]).any(-1)
        members = torch.where(reciprocal, forward, num)  # num marks "no member"
        # candidate forward[i, r] contributes its own (half-size) reciprocal set when more
        # than 2/3 of that set already lies in the probe's k-reciprocal set
        cand = _take(half, forward)
        cand_ok = _take(half_reciprocal, forward)
        listed = members.sort(dim=1).values  # membership by binary search per row
        where = torch.searchsorted(listed, cand.flatten(1)).clamp_max_(listed.shape[1] - 1)
        in_members = (listed.gather(1, where) == cand.flatten(1)).view(cand.shape)
        shared = (in_members & cand_ok).sum(-1)
        size = cand_ok.sum(-1)
        accept = reciprocal & (shared.double() > 2.0 / 3 * size.double())
        cand = torch.where(accept[..., None] & cand_ok, cand, num)
        expansion = _unique_rows(torch.cat([members, cand.flatten(1)], dim=1), num)
        valid = expansion < num
        others = torch.where(valid, expansion, 0)
        dist = distance.pairs(ids, others).float() / row_max[rows, None]
        weight = torch.exp(-dist) * valid
        weight = weight / weight.sum(dim=1, keepdim=True)
        counts.append(valid.sum(1))
        cols.append(expansion.masked_select(valid))
        vals.append(weight.masked_select(valid))
    return _csr(counts, cols, vals)


def _arange(num: int, device: torch.device) -> Tensor:
    return torch.arange(num, device=device)


def _csr(counts: list[Tensor], cols: list[Tensor], vals: list[Tensor]) -> tuple[Tensor, ...]:
    """CSR arrays ``(crow, col, val)`` from per-chunk row lengths, columns and values."""
    counts = torch.cat(counts)
    crow = torch.zeros(len(counts) + 1, dtype=torch.long, device=counts.device)
    crow[1:] = counts.cumsum(0)
    return crow, torch.cat(cols), torch.cat(vals)


def _unique_rows(values: Tensor, sentinel: int) -> Tensor:
    """Each row's distinct values ascending, then ``sentinel`` padding; trailing pad dropped."""
    values = values.sort(dim=1).values
    repeated = torch.zeros_like(values, dtype=torch.bool)
    repeated[:, 1:] = values[:, 1:] == values[:, :-1]
    values = torch.where(repeated, sentinel, values).sort(dim=1).values
    width = int((values < sentinel).sum(1).max())
    return values[:, :width]


def _gather_rows(crow: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """For the CSR entries of ``rows`` in order: which of ``rows`` owns each, and its position."""
    starts = _take(crow, rows)
    lengths = _take(crow, rows + 1) - starts
    owner = torch.repeat_interleave(_arange(len(rows), crow.device), lengths)
    shift = starts - (lengths.cumsum(0) - lengths)
    return owner, _arange(len(owner), crow.device) + _take(shift, owner)


def _query_expansion(
    weights: tuple[Tensor, Tensor, Tensor], neighbours: Tensor, chunk_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Each probe's weight vector replaced by the mean over its ``k2`` nearest probes' vectors."""
    crow, col, val = weights
    num, k2 = neighbours.shape
    counts, cols, vals = [], [], []
    for block in neighbours.split(chunk_size):
        owner, position = _gather_rows(crow, block.flatten())
        key = (owner // k2) * num + _take(col, position)
        key, inverse = torch.unique(key, sorted=True, return_inverse=True)
        total = torch.zeros(len(key), dtype=val.dtype, device=val.device)
        total.index_add_(0, inverse, _take(val, position))
        counts.append(torch.bincount(key // num, minlength=len(block)))
        cols.append(key % num)
        vals.append(total / k2)
    return _csr(counts, cols, vals)


def _blend(
    distance: _Distance,
    num_query: int,
    weights: tuple[Tensor, Tensor, Tensor],
    row_max: Tensor,
    lambda_value: float,
    chunk_size: int,
) -> Tensor:
    """Jaccard distance of query rows against gallery rows, blended with the original distance."""
    crow, col, val = weights
    num, device = len(row_max), row_max.device
    num_gallery = num - num_query
    # inverted index: for each probe column, the gallery rows with a nonzero weight there
    first = int(crow[num_query])
    gallery_rows = torch.repeat_interleave(
        _arange(num_gallery, device), crow[num_query + 1 :] - crow[num_query:-1]
    )
    gallery_cols = col[first:]
    order = torch.sort(gallery_cols, stable=True).indices
    inv_rows, inv_vals = _take(gallery_rows, order), _take(val[first:], order)
    inv_ptr = torch.zeros(num + 1, dtype=torch.long, device=device)
    inv_ptr[1:] = torch.bincount(gallery_cols, minlength=num).cumsum(0)

    # split queries so each step expands at most `budget` (query, column, gallery) terms
    owner, position = _gather_rows(crow, _arange(num_query, device))
    query_cols = _take(col, position)
    terms = _take(inv_ptr, query_cols + 1) - _take(inv_ptr, query_cols)
    per_query = torch.zeros(num_query, dtype=torch.long, device=device).index_add_(0, owner, terms)
    cumulative = torch.cat([per_query.new_zeros(1), per_query.cumsum(0)]).cpu()
    budget = max(1, chunk_size * num // 4)

    out = torch.empty(num_query, num_gallery, dtype=torch.float32)
    gallery = slice(num_query, num)
    start = 0
    while start < num_query:
        reach = int(torch.searchsorted(cumulative, cumulative[start] + budget, right=True)) - 1
        stop = min(num_query, start + chunk_size, max(start + 1, reach))
        owner, position = _gather_rows(crow, torch.arange(start, stop, device=device))
        pair_owner, pair_position = _gather_rows(inv_ptr, _take(col, position))
        overlap = torch.zeros((stop - start) * num_gallery, dtype=torch.float32, device=device)
        overlap.index_add_(
            0,
            _take(owner, pair_owner) * num_gallery + _take(inv_rows, pair_position),
            torch.minimum(_take(_take(val, position), pair_owner), _take(inv_vals, pair_position)),
        )
        overlap = overlap.view(stop - start, num_gallery)
        jaccard = 1.0 - overlap / (2.0 - overlap)
        original = distance.block(slice(start, stop), gallery) / row_max[start:stop, None]
        out[start:stop] = (jaccard * (1.0 - lambda_value) + original * lambda_value).cpu()
        start = stop
    return out
