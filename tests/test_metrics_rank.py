"""The ReID ranking protocol (CMC, mAP, mINP) of ``rvsl.metrics.evaluate_rank``."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from rvsl.metrics import evaluate_rank
from rvsl.metrics.rank_reference import reference_evaluate_rank


def assert_same_result(result, expected):
    assert result["num_valid_queries"] == expected["num_valid_queries"]
    np.testing.assert_allclose(result["cmc"], expected["cmc"], rtol=0, atol=1e-12)
    assert result["mAP"] == pytest.approx(expected["mAP"], rel=0, abs=1e-12)
    assert result["mINP"] == pytest.approx(expected["mINP"], rel=0, abs=1e-12)


def random_split(seed, num_q=13, num_g=40, num_ids=6, num_cams=3, distinct_values=None):
    """Random labels and distances; ``distinct_values`` small means many exact ties."""
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
    if distinct_values is None:
        distmat = rng.random((num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.integers(0, distinct_values, (num_q, num_g)).astype(np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


def one_query(distances, g_pids, g_camids, q_pid=1, q_camid=0, **kwargs):
    """evaluate_rank for a single query against a hand-written gallery."""
    return evaluate_rank(
        np.array([distances], dtype=np.float32),
        np.array([q_pid]),
        np.array(g_pids),
        np.array([q_camid]),
        np.array(g_camids),
        **kwargs,
    )


def test_perfect_ranking_gives_map_minp_and_rank1_of_one():
    result = one_query([0.1, 0.2, 0.5, 0.9], g_pids=[1, 1, 2, 3], g_camids=[1, 2, 1, 1])
    assert result["mAP"] == 1.0
    assert result["mINP"] == 1.0
    np.testing.assert_array_equal(result["cmc"], np.ones(50))
    assert result["num_valid_queries"] == 1


def test_average_precision_is_the_mean_precision_at_each_true_match():
    # Ranked gallery: match, miss, match, miss, miss, match -> hits at 0-based ranks 0, 2, 5.
    distances = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    result = one_query(distances, g_pids=[1, 7, 1, 7, 8, 1], g_camids=[1, 1, 1, 1, 1, 1])
    assert result["mAP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    assert result["mINP"] == pytest.approx(3 / 6)
    np.testing.assert_array_equal(result["cmc"][:3], [1.0, 1.0, 1.0])


def test_cmc_counts_the_rank_of_the_first_true_match_averaged_over_queries():
    distmat = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], dtype=np.float32)
    # Query 0 (pid 5) finds its match at rank 3; query 1 (pid 6) at rank 2.
    result = evaluate_rank(distmat, np.array([5, 6]), np.array([1, 6, 5]), [0, 0], [1, 1, 1], 5)
    np.testing.assert_allclose(result["cmc"], [0.0, 0.5, 1.0, 1.0, 1.0])
    assert result["mAP"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert result["mINP"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_gallery_images_of_the_query_identity_from_the_same_camera_are_ignored():
    # The two nearest images are the query's identity seen by the query's own camera.
    result = one_query(
        [0.0, 0.1, 0.2, 0.3, 0.4], g_pids=[1, 1, 9, 1, 9], g_camids=[0, 0, 0, 2, 2], q_camid=0
    )
    # Kept ranking: pid 9, pid 1 (cam 2), pid 9 -> the true match is at rank 2.
    assert result["mAP"] == pytest.approx(1 / 2)
    assert result["mINP"] == pytest.approx(1 / 2)
    np.testing.assert_array_equal(result["cmc"][:3], [0.0, 1.0, 1.0])


def test_other_identities_from_the_query_camera_stay_in_the_ranking():
    result = one_query([0.0, 0.1], g_pids=[4, 1], g_camids=[0, 1], q_camid=0)
    assert result["cmc"][0] == 0.0
    assert result["mAP"] == pytest.approx(1 / 2)


def test_queries_without_a_true_match_are_skipped():
    distmat = np.array([[0.1, 0.2], [0.1, 0.2], [0.2, 0.1]], dtype=np.float32)
    q_pids, q_cams = np.array([1, 3, 2]), np.array([0, 0, 0])
    # Query pid 3 is absent; query pid 2 only has a same-camera image.
    result = evaluate_rank(distmat, q_pids, np.array([1, 2]), q_cams, np.array([1, 0]))
    assert result["num_valid_queries"] == 1
    assert result["mAP"] == 1.0


def test_cmc_has_max_rank_entries_and_is_one_past_the_gallery_size():
    result = one_query([0.3, 0.2, 0.1], g_pids=[1, 2, 3], g_camids=[1, 1, 1], max_rank=7)
    np.testing.assert_array_equal(result["cmc"], [0, 0, 1, 1, 1, 1, 1])
    assert isinstance(result["mAP"], float)
    assert isinstance(result["mINP"], float)
    assert isinstance(result["num_valid_queries"], int)


def test_equal_distances_are_ranked_in_gallery_order():
    # All three are at the same distance: the stable order puts the match last.
    result = one_query([0.5, 0.5, 0.5], g_pids=[2, 3, 1], g_camids=[1, 1, 1])
    assert result["mAP"] == pytest.approx(1 / 3)
    # A same-identity same-camera image tied with the match is removed, not counted as a miss.
    result = one_query([0.5, 0.5, 0.5], g_pids=[1, 2, 1], g_camids=[0, 1, 1], q_camid=0)
    assert result["mAP"] == pytest.approx(1 / 2)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("distinct_values", [None, 2, 7])
def test_matches_a_per_query_loop_on_random_splits_including_ties(seed, distinct_values):
    split = random_split(seed, distinct_values=distinct_values)
    for max_rank in (1, 10, 50):
        expected = reference_evaluate_rank(*split, max_rank=max_rank)
        assert_same_result(evaluate_rank(*split, max_rank=max_rank), expected)


@pytest.mark.parametrize("num_q,num_g", [(1, 1), (5, 1), (7, 64), (30, 257)])
def test_matches_a_per_query_loop_for_gallery_sizes_around_powers_of_two(num_q, num_g):
    for seed, distinct_values in [(0, None), (1, 3)]:
        split = random_split(seed, num_q, num_g, 3, 2, distinct_values)
        _, q_pids, g_pids, q_cams, g_cams = split
        g_pids[0], g_cams[0] = q_pids[0], 1 - q_cams[0]  # at least one valid query
        assert_same_result(evaluate_rank(*split), reference_evaluate_rank(*split))


def test_matches_a_per_query_loop_with_float64_integer_and_negative_distances():
    distmat, *labels = random_split(11, num_q=9, num_g=30, distinct_values=5)
    for dist in (distmat.astype(np.float64) - 2.0, distmat.astype(np.int64), -distmat):
        assert_same_result(evaluate_rank(dist, *labels), reference_evaluate_rank(dist, *labels))


def clustered_split(seed, num_q=40, num_g=600, num_ids=60, noise=0.3, quantum=None):
    """Feature clusters per identity: true matches rank near the top, as with a trained model.

    ``quantum`` rounds the distances to multiples of it, to create exact ties.
    """
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_ids, 16, generator=gen)
    q_pids = torch.randint(num_ids, (num_q,), generator=gen)
    g_pids = torch.randint(num_ids, (num_g,), generator=gen)
    q_feat = centers[q_pids] + noise * torch.randn(num_q, 16, generator=gen)
    g_feat = centers[g_pids] + noise * torch.randn(num_g, 16, generator=gen)
    distmat = torch.cdist(q_feat, g_feat).numpy()
    if quantum is not None:
        distmat = (np.round(distmat / quantum) * quantum).astype(np.float32)
    q_cams = torch.randint(4, (num_q,), generator=gen).numpy()
    g_cams = torch.randint(4, (num_g,), generator=gen).numpy()
    return distmat, q_pids.numpy(), g_pids.numpy(), q_cams, g_cams


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("quantum", [None, 0.05])
def test_matches_a_per_query_loop_when_true_matches_rank_near_the_top(seed, quantum):
    # Few gallery entries precede the last true match: the fast path sorts only those.
    split = clustered_split(seed, quantum=quantum)
    assert_same_result(evaluate_rank(*split), reference_evaluate_rank(*split))
    assert_same_result(evaluate_rank(*split, chunk_elements=1000), reference_evaluate_rank(*split))


def test_matches_a_per_query_loop_when_one_query_has_a_far_true_match():
    # One row needs all of its entries sorted while the others need few: uneven rows.
    distmat, q_pids, g_pids, q_cams, g_cams = clustered_split(4, quantum=0.05)
    far = np.flatnonzero((g_pids == q_pids[0]) & (g_cams != q_cams[0]))[0]
    distmat[0, far] = distmat.max() + 1.0
    split = (distmat, q_pids, g_pids, q_cams, g_cams)
    assert_same_result(evaluate_rank(*split), reference_evaluate_rank(*split))


def test_infinite_distances_and_negative_zero_rank_like_their_values():
    distmat, *labels = clustered_split(7, num_q=12, num_g=200)
    distmat[:, ::7] = np.inf
    distmat[:, 1::9] = -0.0
    distmat[:, 2::9] = 0.0
    distmat[0, :] = np.inf  # a query whose every distance is infinite: all ties
    assert_same_result(evaluate_rank(distmat, *labels), reference_evaluate_rank(distmat, *labels))


@pytest.mark.parametrize("chunk_elements", [1, 45, 10**9])
def test_chunking_does_not_change_the_result(chunk_elements):
    split = random_split(3, num_q=17, num_g=45, distinct_values=4)
    expected = evaluate_rank(*split, chunk_elements=10**9)
    assert_same_result(evaluate_rank(*split, chunk_elements=chunk_elements), expected)


def test_torch_tensors_give_the_same_result_as_numpy_arrays():
    split = random_split(5, distinct_values=6)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in split]
    assert_same_result(evaluate_rank(*tensors), evaluate_rank(*split))


def test_no_query_with_a_true_match_is_an_error():
    with pytest.raises(ValueError, match="no query has a matching identity in the gallery"):
        one_query([0.1, 0.2], g_pids=[1, 2], g_camids=[0, 1], q_camid=0)


@pytest.mark.parametrize("num_q,num_g", [(0, 3), (2, 0)])
def test_empty_query_or_gallery_is_an_error(num_q, num_g):
    with pytest.raises(ValueError, match="at least one query and one gallery"):
        evaluate_rank(
            np.zeros((num_q, num_g)), np.zeros(num_q), np.zeros(num_g), np.zeros(num_q),
            np.zeros(num_g),
        )  # fmt: skip


def test_labels_that_do_not_match_the_distance_matrix_are_an_error():
    distmat = np.zeros((2, 3))
    with pytest.raises(ValueError, match="3 gallery columns"):
        evaluate_rank(distmat, [1, 2], [1, 2], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="2 query rows"):
        evaluate_rank(distmat, [1], [1, 2, 3], [0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="2-D"):
        evaluate_rank(np.zeros(3), [1], [1, 2, 3], [0], [0, 0, 0])


def test_nan_distances_are_an_error():
    with pytest.raises(ValueError, match="NaN"):
        one_query([0.1, float("nan")], g_pids=[1, 2], g_camids=[1, 1])


@pytest.mark.parametrize("clustered", [True, False])
def test_extra_memory_is_bounded_by_the_chunk_not_the_distance_matrix(clustered):
    # 400 x 5,000 float32 = 7.6 MiB; chunks of 2**16 entries must need far less than that.
    if clustered:
        split = clustered_split(0, num_q=400, num_g=5000, num_ids=100)
    else:
        split = random_split(0, num_q=400, num_g=5000, num_ids=100, num_cams=4)
    evaluate_rank(*split, chunk_elements=1 << 16)  # warm-up: numpy's lazy allocations
    tracemalloc.start()
    evaluate_rank(*split, chunk_elements=1 << 16)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < split[0].nbytes / 4
