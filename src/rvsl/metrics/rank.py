"""Query/gallery ranking metrics of the standard ReID protocol: CMC, mAP and mINP.

The protocol is the Market-1501 one used by VeRi-776 and the RVSL paper: for each query the
gallery is ranked by distance (ties broken by gallery order, i.e. a stable sort), gallery images
with the query's identity AND camera are removed, and queries left without a true match are
skipped. Over the remaining ("kept") ranking, with true matches at 0-based kept positions
``p_1 < ... < p_m``:

* CMC: ``cmc[k] = 1`` if ``p_1 <= k``, averaged over valid queries (rank-1 is ``cmc[0]``);
* AP: ``(1/m) sum_j j / (p_j + 1)``, the mean precision at each true match; mAP averages it;
* INP: ``m / (p_m + 1)``, the precision at the hardest true match (Ye et al., TPAMI 2021).

:mod:`rvsl.metrics.rank_reference` states this protocol plainly, one query at a time; it is the
specification, and ``tests/test_metrics_reference.py`` checks that this implementation agrees.

The implementation never argsorts a row. All it needs per true match is its position, the
number of gallery entries of its row with a smaller distance (plus the tied ones at a smaller
gallery index). Per chunk of queries, only entries no farther than the row's farthest true match
can precede one; for float32 distances these "candidates" are packed into int64 keys
(row, order-preserving bits of the distance), sorted once, and each true match's position is a
binary search among them. With a reasonable model the candidates are a small fraction of the
gallery, so this is several times cheaper than sorting whole rows; when they are not (or for
other dtypes), whole rows are sorted instead. Exact ties with a true match are resolved by
gallery index, so the result equals that of the stable-argsort protocol. Apart from these
buffers, only the (query, gallery) pairs that share an identity are materialised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

DEFAULT_CHUNK_ELEMENTS = 1 << 20
"""Queries are processed in chunks of about this many distance entries (4 MiB of float32),
which keeps the scratch buffers in cache; larger chunks are slower, not faster."""


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> dict[str, Any]:
    """CMC, mAP and mINP of a (num_query, num_gallery) distance matrix; smaller is closer.

    Accepts numpy arrays or torch tensors. Returns ``cmc`` (float64 array of length
    ``max_rank``; entries past the gallery size are 1), ``mAP`` and ``mINP`` (floats in [0, 1])
    and ``num_valid_queries``. Memory stays bounded: queries are processed ``chunk_elements //
    num_gallery`` rows at a time (at least one); the chunking does not change the result.
    Raises ``ValueError`` for empty or mismatched inputs, NaN distances, or when no query has a
    true match left in the gallery.
    """
    distmat = _to_numpy(distmat)
    q_pids, g_pids = _to_numpy(q_pids), _to_numpy(g_pids)
    q_camids, g_camids = _to_numpy(q_camids), _to_numpy(g_camids)
    _validate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_elements)

    num_q, num_g = distmat.shape
    gallery = _GalleryByIdentity(g_pids)
    ap = np.zeros(num_q)
    inp = np.zeros(num_q)
    first = np.zeros(num_q, dtype=np.int64)
    valid = np.zeros(num_q, dtype=bool)
    rows_per_chunk = min(num_q, max(1, chunk_elements // num_g))
    for start in range(0, num_q, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, num_q))
        ap[rows], inp[rows], first[rows], valid[rows] = _rank_chunk(
            distmat[rows], q_pids[rows], q_camids[rows], g_camids, gallery
        )

    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            "no query has a matching identity in the gallery (after removing gallery images "
            "that share the query's identity and camera), so CMC/mAP/mINP are undefined; "
            "check that query and gallery pids/camids come from the same split"
        )
    hits_at = np.bincount(np.minimum(first[valid], max_rank), minlength=max_rank + 1)
    cmc = np.cumsum(hits_at[:max_rank]) / num_valid
    return {
        "cmc": cmc,
        "mAP": float(ap[valid].mean()),
        "mINP": float(inp[valid].mean()),
        "num_valid_queries": num_valid,
    }


class _GalleryByIdentity:
    """Gallery indices grouped by pid (ascending index inside a pid), to list true matches."""

    def __init__(self, g_pids: np.ndarray) -> None:
        self.order = np.argsort(g_pids, kind="stable")
        self.pids, self.starts, self.counts = np.unique(
            g_pids[self.order], return_index=True, return_counts=True
        )

    def matches(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, gallery column) of every pair with equal pids, sorted by row then column."""
        slot = np.minimum(np.searchsorted(self.pids, q_pids), len(self.pids) - 1)
        found = self.pids[slot] == q_pids
        counts = np.where(found, self.counts[slot], 0)
        rows = np.repeat(np.arange(len(q_pids)), counts)
        offset_in_row = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = self.order[np.repeat(self.starts[slot], counts) + offset_in_row]
        return rows, cols


def _rank_chunk(
    dist: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    gallery: _GalleryByIdentity,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per query of the chunk: AP, INP, kept position of the first true match, validity."""
    num_rows, num_g = dist.shape
    rows, cols = gallery.matches(q_pids)
    values = dist[rows, cols]
    removed = g_camids[cols] == q_camids[rows]  # same identity AND same camera

    # Walk each row's same-identity entries in ranking order: (distance, gallery index).
    walk = _walk_order(rows, cols, values)
    rows, cols, values, removed = rows[walk], cols[walk], values[walk], removed[walk]
    removed_before = _cumcount_in_row(rows, removed.astype(np.int64), exclusive=True)
    good = ~removed
    rows, cols, values, removed_before = rows[good], cols[good], values[good], removed_before[good]
    hits = _cumcount_in_row(rows, np.ones(len(rows), dtype=np.int64), exclusive=False)

    # Stable position of each true match among ALL entries of its row: #(d < v), plus
    # #(d == v at a smaller gallery index) where v is tied with another entry.
    position, tied = _count_less(dist, rows, values)
    block_rows = max(1, dist.shape[0])
    position[tied] += _count_equal_before(dist, rows[tied], cols[tied], values[tied], block_rows)
    kept_position = position - removed_before  # removed entries before it no longer count

    num_good = np.bincount(rows, minlength=num_rows)
    valid = num_good > 0
    first_of_row = (np.cumsum(num_good) - num_good)[valid]
    last_of_row = first_of_row + num_good[valid] - 1
    precision_sum = np.bincount(rows, weights=hits / (kept_position + 1), minlength=num_rows)
    ap, inp = np.zeros(num_rows), np.zeros(num_rows)
    first = np.full(num_rows, num_g, dtype=np.int64)
    ap[valid] = precision_sum[valid] / num_good[valid]
    inp[valid] = num_good[valid] / (kept_position[last_of_row] + 1)
    first[valid] = kept_position[first_of_row]
    return ap, inp, first, valid


def _walk_order(rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Permutation sorting pairs by (row, value, col); ``cols`` ascend within each row.

    For float32 a stable argsort of packed (row, value) keys keeps the column order and is
    several times faster than ``np.lexsort`` on three keys.
    """
    if values.dtype == np.float32:
        return np.argsort(_packed_keys(rows, values), kind="stable")
    return np.lexsort((cols, values, rows))


def _packed_keys(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """int64 keys ordered like ``(row, value)`` for float32 ``values`` without NaN.

    IEEE-754 bits read as int32 are monotone for non-negative floats and reversed for negative
    ones, so negative values get their magnitude bits flipped; adding 0.0 first maps -0.0 to
    +0.0, which compare equal as floats.
    """
    bits = (values + np.float32(0.0)).view(np.int32)
    if len(bits) and bits.min() < 0:
        bits = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    return (rows.astype(np.int64) << 32) + (bits.astype(np.int64) + (1 << 31))


def _count_less(
    dist: np.ndarray, rows: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per true match ``(row, value)``: ``#(dist[row] < value)``, and which values are tied.

    ``rows`` ascend and ``values`` ascend within a row. Only entries no farther than the row's
    last true match can precede one, so just these candidates are sorted: padded to the
    longest row of candidates and sorted row-wise when rows are even, else as packed
    (row, value) keys; each value's count is then a binary search. ``tied`` lists the values
    that another entry of their row equals.
    """
    num_rows, num_g = dist.shape
    if np.issubdtype(dist.dtype, np.floating) and np.isnan(dist.max()):
        raise ValueError("distmat contains NaN, so the ranking is undefined")
    if not len(rows):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    limit = np.full(num_rows, _lowest(dist.dtype), dtype=dist.dtype)
    last_of_row = np.r_[rows[1:] != rows[:-1], True]
    limit[rows[last_of_row]] = values[last_of_row]
    flat_index = np.flatnonzero(dist <= limit[:, None])
    candidate_rows = flat_index // num_g
    per_row = np.bincount(candidate_rows, minlength=num_rows)
    width = int(per_row.max())
    if dist.dtype == np.float32 and width * num_rows > 2 * len(flat_index):
        # Uneven rows: padding would waste most of the sort; sort packed (row, value) keys.
        candidates = dist.reshape(-1)[flat_index]
        return _count_less_packed(candidate_rows, candidates, per_row, rows, values)
    if width * num_rows >= num_g * num_rows // 2:
        sorted_rows = np.sort(dist, axis=1)  # padding would save little: sort whole rows
    else:
        # Padding sorts after every candidate; a value equal to it is flagged as tied and
        # then counted exactly on the unpadded row.
        sorted_rows = np.full((num_rows, width), _highest(dist.dtype), dtype=dist.dtype)
        slot = np.arange(len(flat_index)) - (np.cumsum(per_row) - per_row)[candidate_rows]
        sorted_rows[candidate_rows, slot] = dist.reshape(-1)[flat_index]
        sorted_rows.sort(axis=1)
    width = sorted_rows.shape[1]
    flat = sorted_rows.reshape(-1)
    position = _binary_search_rows(flat, width, rows, values)
    after = rows * width + np.minimum(position + 1, width - 1)
    tied = np.flatnonzero((position + 1 < width) & (flat[after] == values))
    return position, tied


def _count_less_packed(
    candidate_rows: np.ndarray,
    candidates: np.ndarray,
    per_row: np.ndarray,
    rows: np.ndarray,
    values: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_count_less` on float32 candidates grouped by row, with one flat sort.

    Keys pack (row, value), so a global sort orders each row's candidates, and a binary
    search of a match's key counts the candidates before it (minus the earlier rows').
    """
    keys = _packed_keys(candidate_rows, candidates)
    keys.sort()
    wanted = _packed_keys(rows, values)
    first = np.searchsorted(keys, wanted, side="left")
    after = np.searchsorted(keys, wanted, side="right")
    row_start = np.cumsum(per_row) - per_row
    return first - row_start[rows], np.flatnonzero(after - first > 1)


def _lowest(dtype: np.dtype) -> Any:
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


def _highest(dtype: np.dtype) -> Any:
    return np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).max


def _binary_search_rows(
    flat_sorted_rows: np.ndarray, num_cols: int, rows: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """Per value, ``#(sorted_row[row] < value)`` for a flattened matrix of ascending rows.

    ``np.searchsorted`` on each row, vectorised over all values as a branch-free binary search
    (descending powers of two): about log2(num_cols) gathers in all.
    """
    row_start = rows * num_cols - 1
    count = np.zeros(len(values), dtype=np.int64)
    step = 1 << (num_cols.bit_length() - 1)
    while step:
        candidate = count + step
        probe = flat_sorted_rows[row_start + np.minimum(candidate, num_cols)]
        count = np.where((probe < values) & (candidate <= num_cols), candidate, count)
        step >>= 1
    return count


def _count_equal_before(
    dist: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, block: int
) -> np.ndarray:
    """Per (row, col, value): ``#(dist[row, :col] == value)``, the stable tie-break by index.

    Compares whole rows, ``block`` rows at a time; only needed where a true match is tied.
    """
    gallery_index = np.arange(dist.shape[1])
    out = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), block):
        sl = slice(start, start + block)
        equal_before = (dist[rows[sl]] == values[sl, None]) & (gallery_index < cols[sl, None])
        out[sl] = equal_before.sum(axis=1)
    return out


def _cumcount_in_row(rows: np.ndarray, weights: np.ndarray, exclusive: bool) -> np.ndarray:
    """Running sum of ``weights`` restarting at each new row (``rows`` must be sorted)."""
    running = np.cumsum(weights)
    starts_row = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, dtype=bool)
    row_of = np.cumsum(starts_row) - 1
    running -= (running - weights)[starts_row][row_of]
    return running - weights if exclusive else running


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array, torch tensor (any device) or sequence."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def _validate(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    chunk_elements: int,
) -> None:
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}")
    labels = {"q_pids": q_pids, "g_pids": g_pids, "q_camids": q_camids, "g_camids": g_camids}
    for name, arr in labels.items():
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    num_q, num_g = distmat.shape
    if num_q == 0 or num_g == 0:
        raise ValueError(
            f"evaluate_rank needs at least one query and one gallery item, got {num_q} queries "
            f"and {num_g} gallery items"
        )
    if len(q_pids) != num_q or len(q_camids) != num_q:
        raise ValueError(
            f"distmat has {num_q} query rows but q_pids has {len(q_pids)} entries and q_camids "
            f"{len(q_camids)}"
        )
    if len(g_pids) != num_g or len(g_camids) != num_g:
        raise ValueError(
            f"distmat has {num_g} gallery columns but g_pids has {len(g_pids)} entries and "
            f"g_camids {len(g_camids)}"
        )
    if not (np.issubdtype(distmat.dtype, np.floating) or np.issubdtype(distmat.dtype, np.integer)):
        raise ValueError(f"distmat must hold real numbers, got dtype {distmat.dtype}")
    if int(max_rank) != max_rank or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank}")
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
