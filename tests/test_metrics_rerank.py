"""Specification of ``k_reciprocal_rerank``: it is the reference k-reciprocal re-ranking.

The reference (Zhong et al., CVPR 2017; the ``re_ranking`` of the authors' code, torchreid and
fast-reid) is restated below as plain numpy loops over full (N, N) matrices; the vectorised,
chunked, sparse implementation must reproduce it to float32 precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvsl.metrics import evaluate_rank, pairwise_distance
from rvsl.metrics.rerank import k_reciprocal_rerank


def reference_rerank(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value):
    """The reference algorithm, step by step; its only change: ties in argsort go by index.

    Takes the original distances themselves (squared Euclidean or ``1 - cos``), so the
    reference's conversion of its inputs (``np.power(d, 2)`` of Euclidean distances, or
    ``2 - 2 * similarity``) is already done.
    """
    # all probes: queries first, then gallery; each column divided by its max, then transposed
    original = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], 1)]
    ).astype(np.float32)
    original = np.transpose(original / np.max(original, axis=0))
    num_query, num = len(q_g_dist), len(original)
    initial_rank = np.argsort(original, axis=1, kind="stable")

    def reciprocal_neighbours(i, k):
        forward = initial_rank[i, :k]
        backward = initial_rank[forward, :k]
        return forward[np.where(backward == i)[0]]

    V = np.zeros_like(original)
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(num):
        k_reciprocal = reciprocal_neighbours(i, k1 + 1)
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            candidate_reciprocal = reciprocal_neighbours(candidate, half)
            shared = len(np.intersect1d(candidate_reciprocal, k_reciprocal))
            if shared > 2.0 / 3 * len(candidate_reciprocal):
                expansion = np.append(expansion, candidate_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = weight / np.sum(weight)

    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(num):
            V_qe[i] = np.mean(V[initial_rank[i, :k2]], axis=0)
        V = V_qe

    inverted_index = [np.where(V[:, column] != 0)[0] for column in range(num)]
    jaccard = np.zeros((num_query, num), dtype=np.float32)
    for i in range(num_query):
        overlap = np.zeros(num, dtype=np.float32)
        for column in np.where(V[i] != 0)[0]:
            rows = inverted_index[column]
            overlap[rows] = overlap[rows] + np.minimum(V[i, column], V[rows, column])
        jaccard[i] = 1 - overlap / (2.0 - overlap)

    final = jaccard * (1 - lambda_value) + original[:num_query] * lambda_value
    return final[:, num_query:]


def exact_distance(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances, entry by entry (exactly symmetric, exact ties for equal features)."""
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return np.maximum(1.0 - (a[:, None, :] * b[None, :, :]).sum(-1), 0.0)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def reference_from_features(query, gallery, k1, k2, lambda_value, metric):
    q, g = query.double().numpy(), gallery.double().numpy()
    dist = {
        "q_g_dist": exact_distance(q, g, metric),
        "q_q_dist": exact_distance(q, q, metric),
        "g_g_dist": exact_distance(g, g, metric),
    }
    return reference_rerank(**dist, k1=k1, k2=k2, lambda_value=lambda_value)


def clustered(num_query, num_gallery, num_ids=5, dim=8, noise=0.7, seed=0):
    """Features scattered around a few identity centres, plus the identities."""
    gen = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(num_ids, dim, generator=gen)
    q_pids = torch.randint(num_ids, (num_query,), generator=gen)
    g_pids = torch.randint(num_ids, (num_gallery,), generator=gen)
    query = centres[q_pids] + noise * torch.randn(num_query, dim, generator=gen)
    gallery = centres[g_pids] + noise * torch.randn(num_gallery, dim, generator=gen)
    return query, gallery, q_pids, g_pids


PARAMS = [  # (k1, k2, lambda_value)
    (20, 6, 0.3),  # the paper's setting
    (5, 3, 0.5),  # odd k1: round(5 / 2) = 2, half to even
    (7, 1, 0.0),  # k2 = 1: no query expansion; pure Jaccard distance
    (3, 8, 0.2),  # k2 > k1 + 1
    (1, 2, 0.9),
]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize(("k1", "k2", "lambda_value"), PARAMS)
def test_matches_reference_algorithm(metric, k1, k2, lambda_value):
    query, gallery, _, _ = clustered(12, 40, seed=k1 + k2)
    expected = reference_from_features(query, gallery, k1, k2, lambda_value, metric)
    result = k_reciprocal_rerank(query, gallery, k1, k2, lambda_value, metric=metric)
    assert result.shape == (12, 40) and result.dtype == torch.float32
    assert result.device.type == "cpu"
    np.testing.assert_allclose(result.numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_matches_reference_with_duplicate_features(metric):
    """Exact ties in every ranking (a query repeated in the gallery, gallery duplicates)."""
    query, gallery, _, _ = clustered(12, 40, seed=3)
    gallery[5] = gallery[9] = gallery[31] = query[2]
    gallery[20] = gallery[21] = gallery[0]
    query[7] = query[8]
    for k1, k2, lambda_value in [(20, 6, 0.3), (4, 3, 0.5), (2, 1, 0.1)]:
        expected = reference_from_features(query, gallery, k1, k2, lambda_value, metric)
        result = k_reciprocal_rerank(query, gallery, k1, k2, lambda_value, metric=metric)
        np.testing.assert_allclose(result.numpy(), expected, rtol=0, atol=1e-5)


def test_neighbourhoods_larger_than_the_data_use_every_probe():
    query, gallery, _, _ = clustered(2, 3, seed=1)
    expected = reference_from_features(query, gallery, 20, 6, 0.3, "euclidean")
    result = k_reciprocal_rerank(query, gallery, 20, 6, 0.3)
    np.testing.assert_allclose(result.numpy(), expected, rtol=0, atol=1e-5)


def test_identical_features_give_finite_distances():
    """All distances 0: the reference divides 0 by 0; here each probe is normalised by 1."""
    result = k_reciprocal_rerank(torch.ones(3, 4), torch.ones(5, 4), 2, 2)
    assert torch.isfinite(result).all()
    assert ((result >= 0) & (result <= 1)).all()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_lambda_one_gives_the_normalised_original_distance(metric):
    """Each query's distances divided by its largest distance to any query or gallery item."""
    query, gallery, _, _ = clustered(10, 30, seed=4)
    everything = torch.cat([query, gallery])
    dist = pairwise_distance(everything, everything, metric)
    expected = (dist / dist.amax(dim=0)).T[:10, 10:]
    result = k_reciprocal_rerank(query, gallery, lambda_value=1.0, metric=metric)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)


def test_chunk_size_does_not_change_the_result():
    query, gallery, _, _ = clustered(15, 45, seed=5)
    full = k_reciprocal_rerank(query, gallery, 6, 3, chunk_size=10_000)
    for chunk_size in (1, 4, 17):
        chunked = k_reciprocal_rerank(query, gallery, 6, 3, chunk_size=chunk_size)
        torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)


def test_float64_features_give_the_same_result():
    query, gallery, _, _ = clustered(8, 24, seed=6)
    single = k_reciprocal_rerank(query, gallery, 5, 3)
    double = k_reciprocal_rerank(query.double(), gallery.double(), 5, 3)
    assert double.dtype == torch.float32
    torch.testing.assert_close(double, single, rtol=0, atol=1e-5)


def test_reranking_improves_map_on_clustered_features():
    """Overlapping identity clusters: the plain ranking is imperfect, re-ranking repairs it."""
    query, gallery, q_pids, g_pids = clustered(40, 400, num_ids=20, dim=16, noise=1.8, seed=7)
    q_cams, g_cams = torch.zeros(40, dtype=torch.long), torch.ones(400, dtype=torch.long)
    plain = evaluate_rank(pairwise_distance(query, gallery), q_pids, g_pids, q_cams, g_cams)
    reranked = k_reciprocal_rerank(query, gallery)
    improved = evaluate_rank(reranked, q_pids, g_pids, q_cams, g_cams)
    assert plain["mAP"] < 0.9
    assert improved["mAP"] > plain["mAP"] + 0.03


FEATS = torch.randn(4, 8)
BAD_INPUTS = [
    ({"query": torch.empty(0, 8)}, "at least one query"),
    ({"gallery": torch.empty(0, 8)}, "at least one query"),
    ({"gallery": torch.randn(5, 7)}, "same dimension"),
    ({"query": torch.randn(8)}, r"\(N, D\)"),
    ({"query": FEATS.numpy()}, "torch tensors"),
    ({"query": torch.tensor([[0.0] * 7 + [float("nan")]])}, "NaN"),
    ({"gallery": torch.full((2, 8), float("inf"))}, "infinite"),
    ({"k1": 0}, "k1 must be an integer >= 1"),
    ({"k1": 2.5}, "k1 must be an integer >= 1"),
    ({"k2": 0}, "k2 must be an integer >= 1"),
    ({"lambda_value": -0.1}, r"lambda_value must be a number in \[0, 1\]"),
    ({"lambda_value": 1.5}, r"lambda_value must be a number in \[0, 1\]"),
    ({"lambda_value": float("nan")}, r"lambda_value must be a number in \[0, 1\]"),
    ({"metric": "manhattan"}, "metric must be one of"),
    ({"chunk_size": 0}, "chunk_size must be a positive integer"),
]


@pytest.mark.parametrize(("override", "message"), BAD_INPUTS)
def test_bad_inputs_raise_value_error(override, message):
    kwargs = {"query": FEATS, "gallery": torch.randn(6, 8), **override}
    with pytest.raises(ValueError, match=message):
        k_reciprocal_rerank(**kwargs)
