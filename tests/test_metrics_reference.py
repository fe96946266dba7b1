"""The vectorised ranking (``evaluate_rank``) equals the per-query specification
(``reference_evaluate_rank``): ties, several cameras, queries without a true match, and every
``max_rank`` edge case; and the specification itself gives the textbook numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvsl.metrics.rank import evaluate_rank
from rvsl.metrics.rank_reference import reference_evaluate_rank


def assert_same(result: dict, expected: dict) -> None:
    assert result["num_valid_queries"] == expected["num_valid_queries"]
    assert result["cmc"].shape == expected["cmc"].shape
    np.testing.assert_allclose(result["cmc"], expected["cmc"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["mAP"], expected["mAP"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["mINP"], expected["mINP"], rtol=0, atol=1e-12)


def split(
    seed: int,
    num_q: int = 25,
    num_g: int = 60,
    num_ids: int = 8,
    num_cams: int = 3,
    distinct: int | None = None,
) -> tuple[np.ndarray, ...]:
    """Random labels and float32 distances (``distinct`` values only: many exact ties), with
    two queries that have no true match: one whose identity the gallery lacks, one whose
    identity the gallery shows only through the query's own camera."""
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    absent, junk_only = num_ids, num_ids + 1
    q_pids[0] = absent
    q_pids[1], q_cams[1] = junk_only, 0
    g_pids[:2], g_cams[:2] = junk_only, 0
    q_pids[2], q_cams[2] = g_pids[2], (g_cams[2] + 1) % num_cams  # at least one valid query
    if distinct is None:
        distmat = rng.random((num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.integers(0, distinct, (num_q, num_g)).astype(np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


# ---------------------------------------------------------------- the specification itself
def test_the_specification_gives_the_textbook_numbers_of_one_query():
    # Kept ranking: match, miss, match, miss, miss, match -> true matches at ranks 1, 3, 6.
    distances = np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    result = reference_evaluate_rank(distances, [1], [1, 7, 1, 7, 8, 1], [0], [1] * 6, max_rank=4)
    assert result["mAP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    assert result["mINP"] == pytest.approx(3 / 6)
    np.testing.assert_array_equal(result["cmc"], [1, 1, 1, 1])
    assert result["num_valid_queries"] == 1


def test_the_specification_removes_junk_keeps_ties_in_gallery_order_and_skips_lost_queries():
    # Query 0 (pid 1, cam 0): the two nearest are junk (pid 1, cam 0); then pid 9, then pid 1.
    # Query 1 (pid 5): no pid 5 in the gallery, skipped. Query 2 (pid 9, cam 0): all three
    # distances tie, gallery order puts its match (index 2) after two junk-free misses.
    distmat = np.array(
        [[0.0, 0.1, 0.2, 0.3, 0.4], [0.1, 0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5, 0.5]]
    )
    g_pids, g_cams = [1, 1, 9, 1, 9], [0, 0, 1, 2, 2]
    result = reference_evaluate_rank(distmat, [1, 5, 9], g_pids, [0, 0, 0], g_cams, max_rank=3)
    assert result["num_valid_queries"] == 2
    # query 0: kept ranking 9, 1, 9 -> hit at rank 2; query 2: 1, 1, 9, 1, 9 -> hits at 3, 5
    assert result["mAP"] == pytest.approx((1 / 2 + (1 / 3 + 2 / 5) / 2) / 2)
    assert result["mINP"] == pytest.approx((1 / 2 + 2 / 5) / 2)
    np.testing.assert_allclose(result["cmc"], [0, 0.5, 1])


def test_the_specification_refuses_a_split_without_any_true_match():
    with pytest.raises(ValueError, match="no query has a matching identity"):
        reference_evaluate_rank(np.zeros((1, 2)), [1], [1, 2], [0], [0, 0])


# ---------------------------------------------------------------- the fast path equals it
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("distinct", [None, 2, 5])
@pytest.mark.parametrize("num_cams", [2, 3, 6])
def test_the_fast_path_equals_the_specification_with_ties_cameras_and_lost_queries(
    seed, distinct, num_cams
):
    data = split(seed, num_cams=num_cams, distinct=distinct)
    expected = reference_evaluate_rank(*data)
    assert expected["num_valid_queries"] < len(data[1])  # some queries were skipped
    assert_same(evaluate_rank(*data), expected)
    assert_same(evaluate_rank(*data, chunk_elements=1), expected)  # one query at a time


@pytest.mark.parametrize("seed", range(3))
def test_every_max_rank_edge_case_matches(seed):
    num_g = 12
    data = split(seed, num_q=9, num_g=num_g, num_ids=3, distinct=3)
    _, q_pids, g_pids, q_cams, g_cams = data
    junk = (g_pids[None, :] == q_pids[:, None]) & (g_cams[None, :] == q_cams[:, None])
    kept = (~junk).sum(axis=1).tolist()  # each query's ranking after junk removal
    # 1, the shortest kept ranking and around it, the gallery size and around it, beyond it
    for max_rank in sorted({1, 2, min(kept) - 1, min(kept), num_g - 1, num_g, num_g + 1, 50}):
        if max_rank < 1:
            continue
        expected = reference_evaluate_rank(*data, max_rank=max_rank)
        assert_same(evaluate_rank(*data, max_rank=max_rank), expected)
        assert len(expected["cmc"]) == max_rank
    beyond = evaluate_rank(*data, max_rank=num_g + 5)["cmc"]
    np.testing.assert_array_equal(beyond[num_g:], 1.0)  # past the gallery: every query found


def test_a_one_image_gallery_and_a_one_query_split_match():
    data = (np.array([[0.3]], dtype=np.float32), [4], [4], [0], [1])
    for max_rank in (1, 5):
        expected = reference_evaluate_rank(*data, max_rank=max_rank)
        assert_same(evaluate_rank(*data, max_rank=max_rank), expected)
        np.testing.assert_array_equal(expected["cmc"], np.ones(max_rank))


def test_float64_integer_negative_and_infinite_distances_and_tensors_match():
    distmat, *labels = split(7, distinct=4)
    infinite = distmat.copy()
    infinite[:, ::5] = np.inf
    for dist in (distmat.astype(np.float64) - 2.0, distmat.astype(np.int64), -distmat, infinite):
        assert_same(evaluate_rank(dist, *labels), reference_evaluate_rank(dist, *labels))
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (distmat, *labels)]
    assert_same(evaluate_rank(*tensors), reference_evaluate_rank(distmat, *labels))


def test_clustered_features_with_true_matches_near_the_top_match():
    # A trained model puts true matches first: the fast path then sorts few candidates.
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 8, generator=gen)
    q_pids, g_pids = (
        torch.randint(30, (40,), generator=gen),
        torch.randint(30, (400,), generator=gen),
    )
    q_feat = centres[q_pids] + 0.3 * torch.randn(40, 8, generator=gen)
    g_feat = centres[g_pids] + 0.3 * torch.randn(400, 8, generator=gen)
    distmat = torch.cdist(q_feat, g_feat).numpy()
    q_cams, g_cams = torch.randint(4, (40,), generator=gen), torch.randint(4, (400,), generator=gen)
    data = (distmat, q_pids.numpy(), g_pids.numpy(), q_cams.numpy(), g_cams.numpy())
    for max_rank in (1, 10, 50):
        expected = reference_evaluate_rank(*data, max_rank=max_rank)
        assert_same(evaluate_rank(*data, max_rank=max_rank), expected)


def test_both_refuse_a_split_whose_only_matches_share_the_query_camera():
    data = split(0, num_cams=1)  # one camera: every same-identity image is junk
    with pytest.raises(ValueError, match="no query has a matching identity"):
        reference_evaluate_rank(*data)
    with pytest.raises(ValueError, match="no query has a matching identity"):
        evaluate_rank(*data)
