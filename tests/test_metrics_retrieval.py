"""Distance matrices (``pairwise_distance``) and the torchmetrics ``RetrievalMetric``."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from rvsl.metrics import RetrievalMetric, evaluate_rank, pairwise_distance


def clustered_images(seed=0, num=60, num_ids=8, num_cams=3, dim=16):
    """Features around one centre per identity, with pids, camids and a query flag."""
    gen = torch.Generator().manual_seed(seed)
    pids = torch.randint(num_ids, (num,), generator=gen)
    camids = torch.randint(num_cams, (num,), generator=gen)
    is_query = torch.rand(num, generator=gen) < 0.3
    centers = torch.randn(num_ids, dim, generator=gen)
    features = centers[pids] + 0.8 * torch.randn(num, dim, generator=gen)
    return features, pids, camids, is_query


def expected_metrics(features, pids, camids, is_query, metric="euclidean", normalize=False):
    q, g = is_query, ~is_query
    distmat = pairwise_distance(features[q], features[g], metric, normalize)
    result = evaluate_rank(distmat, pids[q], pids[g], camids[q], camids[g])
    return {
        "mAP": result["mAP"],
        "mINP": result["mINP"],
        "rank1": result["cmc"][0],
        "rank5": result["cmc"][4],
        "rank10": result["cmc"][9],
    }


def assert_metrics_equal(computed, expected):
    assert set(computed) == set(expected)
    for name, value in expected.items():
        assert computed[name].item() == pytest.approx(value, abs=1e-6), name


# --- pairwise_distance -------------------------------------------------------------------------


def test_euclidean_distance_is_the_squared_euclidean_distance():
    query, gallery = torch.randn(5, 8), torch.randn(7, 8)
    expected = torch.cdist(query.double(), gallery.double()).pow(2).float()
    torch.testing.assert_close(pairwise_distance(query, gallery), expected, rtol=1e-5, atol=1e-5)


def test_cosine_distance_is_one_minus_the_cosine_similarity():
    query, gallery = torch.randn(5, 8), torch.randn(7, 8)
    expected = 1 - F.cosine_similarity(query[:, None], gallery[None], dim=2)
    actual = pairwise_distance(query, gallery, metric="cosine")
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_normalized_euclidean_distance_is_two_minus_twice_the_cosine_similarity():
    query, gallery = torch.randn(5, 8), torch.randn(7, 8)
    cosine = pairwise_distance(query, gallery, metric="cosine")
    actual = pairwise_distance(query, gallery, normalize=True)
    torch.testing.assert_close(actual, 2 * cosine, rtol=1e-5, atol=1e-5)


def test_distances_are_float32_and_never_negative():
    features = torch.randn(4, 6, dtype=torch.float64) * 1e3
    distances = pairwise_distance(features, features)
    assert distances.dtype == torch.float32
    assert distances.shape == (4, 4)
    assert (distances >= 0).all()


def test_chunking_over_query_rows_does_not_change_the_distances():
    query, gallery = torch.randn(9, 8), torch.randn(7, 8)
    for metric in ("euclidean", "cosine"):
        torch.testing.assert_close(
            pairwise_distance(query, gallery, metric, chunk_size=2),
            pairwise_distance(query, gallery, metric),
        )


def test_pairwise_distance_rejects_mismatched_features_and_unknown_metrics():
    with pytest.raises(ValueError, match="same dimension"):
        pairwise_distance(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="metric must be one of"):
        pairwise_distance(torch.randn(3, 4), torch.randn(3, 4), metric="manhattan")


# --- RetrievalMetric ---------------------------------------------------------------------------


def test_metric_over_several_updates_equals_evaluate_rank_on_the_concatenated_data():
    features, pids, camids, is_query = clustered_images()
    metric = RetrievalMetric()
    for batch in torch.arange(len(features)).split(17):
        metric.update(features[batch], pids[batch], camids[batch], is_query[batch])
    assert_metrics_equal(metric.compute(), expected_metrics(features, pids, camids, is_query))


def test_metric_reports_fractions_in_zero_one_with_rank_k_read_from_the_cmc_curve():
    metric = RetrievalMetric()
    metric.update(*clustered_images(seed=1))
    values = metric.compute()
    assert set(values) == {"mAP", "mINP", "rank1", "rank5", "rank10"}
    assert all(0.0 <= v.item() <= 1.0 for v in values.values())
    assert values["rank1"] <= values["rank5"] <= values["rank10"]


def test_metric_passes_the_distance_choice_through():
    data = clustered_images(seed=2)
    metric = RetrievalMetric(metric="cosine")
    metric.update(*data)
    assert_metrics_equal(metric.compute(), expected_metrics(*data, metric="cosine"))


def test_reset_forgets_the_accumulated_images():
    metric = RetrievalMetric()
    metric.update(*clustered_images(seed=3))
    metric.reset()
    data = clustered_images(seed=4)
    metric.update(*data)
    assert_metrics_equal(metric.compute(), expected_metrics(*data))


def test_states_from_two_processes_merge_into_the_result_on_all_the_data():
    features, pids, camids, is_query = clustered_images(seed=5)
    rank0, rank1 = RetrievalMetric(), RetrievalMetric()
    rank0.update(features[:25], pids[:25], camids[:25], is_query[:25])
    rank1.update(features[25:], pids[25:], camids[25:], is_query[25:])
    rank0.merge_state(rank1)
    assert_metrics_equal(rank0.compute(), expected_metrics(features, pids, camids, is_query))


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_compute_before_any_update_is_an_error():
    with pytest.raises(ValueError, match="before any update"):
        RetrievalMetric().compute()


@pytest.mark.parametrize("queries", [True, False])
def test_compute_with_only_queries_or_only_gallery_images_is_an_error(queries):
    features, pids, camids, _ = clustered_images()
    metric = RetrievalMetric()
    metric.update(features, pids, camids, torch.full((len(pids),), queries))
    with pytest.raises(ValueError, match="needs both query and gallery images"):
        metric.compute()


def test_compute_without_any_true_match_is_an_error():
    features = torch.randn(4, 3)
    metric = RetrievalMetric()
    metric.update(features, torch.tensor([0, 1, 2, 3]), torch.zeros(4), torch.tensor([1, 1, 0, 0]))
    with pytest.raises(ValueError, match="no query has a matching identity"):
        metric.compute()


def test_update_rejects_labels_of_the_wrong_length_and_too_small_max_rank():
    with pytest.raises(ValueError, match="pids must have shape"):
        RetrievalMetric().update(torch.randn(4, 3), torch.zeros(3), torch.zeros(4), torch.ones(4))
    with pytest.raises(ValueError, match="max_rank must be at least 10"):
        RetrievalMetric(max_rank=5)


def _ddp_worker(rank, world_size, init_file, out_file):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    features, pids, camids, is_query = clustered_images(seed=6)
    shard = torch.arange(rank, len(features), world_size)
    metric = RetrievalMetric()
    metric.update(features[shard], pids[shard], camids[shard], is_query[shard])
    values = {k: v.item() for k, v in metric.compute().items()}
    if rank == 0:
        torch.save(values, out_file)
    dist.destroy_process_group()


@pytest.mark.slow
def test_metric_gathers_every_process_shard_under_ddp(tmp_path):
    """Two CPU processes (gloo), each updating with half of the images."""
    out_file = tmp_path / "values.pt"
    mp.spawn(_ddp_worker, args=(2, tmp_path / "init", out_file), nprocs=2, join=True)
    computed = {k: torch.tensor(v) for k, v in torch.load(out_file).items()}
    assert_metrics_equal(computed, expected_metrics(*clustered_images(seed=6)))


def test_images_repeated_by_a_padding_sampler_count_once_when_indices_are_given():
    torch.manual_seed(0)
    feats, pids = torch.randn(12, 8), torch.arange(12) % 4
    camids, is_query = torch.arange(12) % 3, torch.arange(12) < 4
    indices = torch.arange(12)
    clean = RetrievalMetric()
    clean.update(feats, pids, camids, is_query, indices)
    padded = RetrievalMetric()
    padded.update(feats[:8], pids[:8], camids[:8], is_query[:8], indices[:8])
    extra = torch.tensor([8, 9, 10, 11, 0, 5])  # a DistributedSampler pads with the first items
    padded.update(feats[extra], pids[extra], camids[extra], is_query[extra], indices[extra])
    want, got = clean.compute(), padded.compute()
    for key in want:
        torch.testing.assert_close(got[key], want[key])
