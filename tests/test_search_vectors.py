"""rvsl.search.vectors: exact, IVF and HNSW search over FAISS, distances in true units."""

from __future__ import annotations

import sys

import faiss
import numpy as np
import pytest
import torch

from rvsl.search.vectors import (
    FAISS_MISSING,
    VectorIndex,
    VectorIndexError,
    default_nlist,
    default_nprobe,
)


def random_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)


def blobs(n: int, dim: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Gaussian blobs around random centres: data whose neighbours an IVF index can find."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    labels = rng.integers(clusters, size=n)
    return centres[labels] + 0.3 * rng.standard_normal((n, dim), dtype=np.float32)


def exact(queries: np.ndarray, gallery: np.ndarray, k: int, metric: str = "euclidean"):
    """Brute force in float64: (distances, ids) of the k nearest."""
    q, g = torch.from_numpy(queries).double(), torch.from_numpy(gallery).double()
    if metric == "euclidean":
        dist = torch.cdist(q, g)
    else:
        dist = (
            1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
        )
    found = dist.topk(k, dim=1, largest=False)
    return found.values.numpy(), found.indices.numpy()


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true k nearest found, over all queries."""
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2)
    return float(hits.mean())


# ---------------------------------------------------------------------------- exact search
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_flat_search_returns_the_brute_force_neighbours_and_distances(metric):
    gallery, queries = random_vectors(500), random_vectors(20, seed=1)
    index = VectorIndex.create(32, metric=metric)
    index.add(gallery)

    distances, ids = index.search(queries, k=10)

    true_distances, true_ids = exact(queries, gallery, 10, metric)
    assert distances.shape == ids.shape == (20, 10)
    np.testing.assert_array_equal(ids, true_ids)
    np.testing.assert_allclose(distances, true_distances, rtol=1e-4, atol=1e-5)


def test_euclidean_distances_are_true_distances_not_their_squares():
    index = VectorIndex.create(2)
    index.add(np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32))
    distances, ids = index.search(np.array([[0.0, 0.0]], dtype=np.float32), k=2)
    np.testing.assert_array_equal(ids, [[0, 1]])
    np.testing.assert_allclose(distances, [[0.0, 5.0]])


def test_cosine_distance_is_one_minus_the_cosine_similarity_whatever_the_lengths():
    index = VectorIndex.create(2, metric="cosine")
    index.add(np.array([[10.0, 0.0], [0.0, 0.5], [-2.0, 0.0]], dtype=np.float32))
    distances, ids = index.search(np.array([[3.0, 3.0]], dtype=np.float32), k=3)
    assert set(ids[0, :2]) == {0, 1} and ids[0, 2] == 2
    np.testing.assert_allclose(distances, [[1 - 2**-0.5, 1 - 2**-0.5, 1 + 2**-0.5]], rtol=1e-6)


def test_asking_for_more_neighbours_than_vectors_pads_with_id_minus_one_at_infinity():
    index = VectorIndex.create(32)
    index.add(random_vectors(3))
    distances, ids = index.search(random_vectors(2, seed=1), k=5)
    assert (ids[:, :3] >= 0).all() and (ids[:, 3:] == -1).all()
    assert np.isfinite(distances[:, :3]).all() and np.isinf(distances[:, 3:]).all()

    empty = VectorIndex.create(32)
    distances, ids = empty.search(random_vectors(2), k=4)
    assert (ids == -1).all() and np.isinf(distances).all()


def test_adding_in_batches_gives_the_ids_and_results_of_adding_at_once():
    gallery, queries = random_vectors(300), random_vectors(10, seed=1)
    once = VectorIndex.create(32)
    once.add(gallery)
    batched = VectorIndex.create(32)
    batched.add(gallery[:120])
    batched.add(torch.from_numpy(gallery[120:]))  # torch tensors are taken too
    assert len(batched) == 300
    for got, want in zip(batched.search(queries, 7), once.search(queries, 7), strict=True):
        np.testing.assert_array_equal(got, want)


def test_cosine_leaves_the_callers_vectors_as_they_were():
    gallery = random_vectors(10)
    before = gallery.copy()
    index = VectorIndex.create(32, metric="cosine")
    index.add(gallery)
    index.search(gallery, 1)
    np.testing.assert_array_equal(gallery, before)


# ---------------------------------------------------------------------------- IVF
def test_ivf_finds_nearly_all_exact_neighbours_on_clustered_data():
    gallery, queries = blobs(2000), blobs(50, seed=1)
    index = VectorIndex.create(32, kind="ivf", nlist=16, nprobe=4)
    index.add(gallery)
    assert index.trained and (index.nlist, index.nprobe) == (16, 4)

    _, ids = index.search(queries, k=10)

    assert recall(ids, exact(queries, gallery, 10)[1]) >= 0.9


def test_ivf_searches_exactly_until_it_has_enough_vectors_to_train_then_trains_on_all():
    gallery, queries = blobs(1000), blobs(20, seed=1)
    index = VectorIndex.create(32, kind="ivf", nlist=16)  # trains at 39 * 16 = 624 vectors
    index.add(gallery[:600])
    assert not index.trained and index.nlist is None
    _, ids = index.search(queries, 5)
    np.testing.assert_array_equal(ids, exact(queries, gallery[:600], 5)[1])

    index.add(gallery[600:])
    assert index.trained and index.nlist == 16 and index.nprobe == default_nprobe(16) == 16
    at_once = VectorIndex.create(32, kind="ivf", nlist=16)
    at_once.add(gallery)
    for got, want in zip(index.search(queries, 5), at_once.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, want)  # same training set, same ids
    _, ids = index.search(gallery[[3, 700]], 1)
    np.testing.assert_array_equal(ids[:, 0], [3, 700])  # row numbers in insertion order


def test_ivf_defaults_scale_with_the_gallery():
    assert default_nlist(10_000) == 400 and default_nlist(1_000_000) == 4000
    assert default_nprobe(400) == 25 and default_nprobe(4000) == 250 and default_nprobe(8) == 8
    small = VectorIndex.create(32, kind="ivf")
    small.add(blobs(5000))  # below 39 * default_nlist(5000): exact
    assert not small.trained


# ---------------------------------------------------------------------------- HNSW
def test_hnsw_returns_the_exact_neighbours_on_a_small_gallery():
    gallery, queries = blobs(1000), blobs(20, seed=1)
    index = VectorIndex.create(32, kind="hnsw", hnsw_m=16)
    index.add(gallery)
    distances, ids = index.search(queries, k=10)
    true_distances, true_ids = exact(queries, gallery, 10)
    assert recall(ids, true_ids) >= 0.95
    found = ids == true_ids
    np.testing.assert_allclose(distances[found], true_distances[found], rtol=1e-4)


# ---------------------------------------------------------------------------- files
@pytest.mark.parametrize(
    ("kind", "metric", "settings"),
    [
        ("flat", "euclidean", {}),
        ("ivf", "cosine", {"nlist": 8, "nprobe": 3}),
        ("hnsw", "euclidean", {}),
    ],
)
def test_a_saved_index_loads_back_with_identical_results(tmp_path, kind, metric, settings):
    gallery, queries = blobs(600), blobs(10, seed=1)
    index = VectorIndex.create(32, kind=kind, metric=metric, **settings)
    index.add(gallery)
    index.save(tmp_path / "gallery.faiss")

    loaded = VectorIndex.load(tmp_path / "gallery.faiss")

    assert (loaded.kind, loaded.metric, loaded.dim, len(loaded)) == (kind, metric, 32, 600)
    assert loaded.nprobe == index.nprobe
    for got, want in zip(loaded.search(queries, 5), index.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, want)
    assert list(tmp_path.iterdir()) == [tmp_path / "gallery.faiss"]  # no temporary file left


def test_an_ivf_index_saved_before_training_still_trains_after_loading(tmp_path):
    index = VectorIndex.create(32, kind="ivf", nlist=8)
    index.add(blobs(100))
    index.save(tmp_path / "small.faiss")
    loaded = VectorIndex.load(tmp_path / "small.faiss", kind="ivf", metric="euclidean", nlist=8)
    assert loaded.kind == "ivf" and not loaded.trained
    loaded.add(blobs(300, seed=2))
    assert loaded.trained and loaded.nlist == 8 and len(loaded) == 400


def test_loading_a_missing_or_foreign_file_names_it(tmp_path):
    with pytest.raises(VectorIndexError, match=r"nowhere\.faiss does not exist"):
        VectorIndex.load(tmp_path / "nowhere.faiss")
    (tmp_path / "notes.txt").write_text("not an index")
    with pytest.raises(VectorIndexError, match=r"notes\.txt is not a FAISS index"):
        VectorIndex.load(tmp_path / "notes.txt")
    index = VectorIndex.create(32)
    index.add(random_vectors(5))
    index.save(tmp_path / "flat.faiss")
    (tmp_path / "cut.faiss").write_bytes((tmp_path / "flat.faiss").read_bytes()[:100])
    with pytest.raises(VectorIndexError, match=r"cut\.faiss is not a FAISS index, or is damaged"):
        VectorIndex.load(tmp_path / "cut.faiss")
    with pytest.raises(VectorIndexError, match=r"flat\.faiss holds a flat index, not hnsw"):
        VectorIndex.load(tmp_path / "flat.faiss", kind="hnsw")
    with pytest.raises(VectorIndexError, match=r"holds a euclidean index, not cosine"):
        VectorIndex.load(tmp_path / "flat.faiss", metric="cosine")


# ---------------------------------------------------------------------------- refusals
def test_vectors_of_the_wrong_shape_or_values_are_refused_with_the_reason():
    index = VectorIndex.create(32, metric="cosine")
    with pytest.raises(
        VectorIndexError, match=r"must be an \(n, 32\) array .* got shape \(4, 16\)"
    ):
        index.add(random_vectors(4, dim=16))
    with pytest.raises(VectorIndexError, match=r"got shape \(32,\)"):
        index.search(random_vectors(1)[0], 1)
    bad = random_vectors(6)
    bad[2, 5], bad[4, 0] = np.nan, np.inf
    with pytest.raises(VectorIndexError, match=r"NaN or infinite values \(rows 2, 4\)"):
        index.add(bad)
    with pytest.raises(VectorIndexError, match=r"all-zero .* \(row 1\)"):
        index.add(np.vstack([random_vectors(1), np.zeros((1, 32), np.float32)]))
    with pytest.raises(VectorIndexError, match="must be floating point, got int64"):
        index.add(np.ones((2, 32), dtype=np.int64))
    with pytest.raises(VectorIndexError, match="k must be a positive integer, got 0"):
        index.search(random_vectors(1), 0)
    assert len(index) == 0  # nothing refused was added


def test_settings_are_checked_when_the_index_is_created():
    with pytest.raises(
        VectorIndexError, match="unknown index kind 'annoy': choose one of flat, ivf, hnsw"
    ):
        VectorIndex.create(32, kind="annoy")
    with pytest.raises(VectorIndexError, match="unknown metric 'manhattan'"):
        VectorIndex.create(32, metric="manhattan")
    with pytest.raises(VectorIndexError, match="nlist and nprobe are IVF settings"):
        VectorIndex.create(32, kind="flat", nlist=100)
    with pytest.raises(VectorIndexError, match="dim must be a positive integer"):
        VectorIndex.create(0)
    with pytest.raises(VectorIndexError, match="use_gpu=True needs faiss-gpu and a visible GPU"):
        VectorIndex.create(32, use_gpu=True)


def test_without_faiss_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'rvsl\[search\]'") as raised:
        VectorIndex.create(32)
    assert str(raised.value) == FAISS_MISSING and isinstance(raised.value, VectorIndexError)


# ---------------------------------------------------------------------------- GPU
def test_with_a_gpu_searches_go_to_a_gpu_copy_refreshed_after_adds_and_files_hold_the_cpu_index(
    monkeypatch, tmp_path
):
    copies = []

    class FakeGpuIndex:  # stands in for faiss-gpu's copy: searchable, not writable to a file
        def __init__(self, index):
            self.cpu = faiss.deserialize_index(faiss.serialize_index(index))

        def search(self, queries, k):
            return self.cpu.search(queries, k)

    def to_gpus(index):
        copies.append(FakeGpuIndex(index))
        return copies[-1]

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus, raising=False)
    index = VectorIndex.create(32)
    assert index.uses_gpu
    index.add(random_vectors(50))
    index.search(random_vectors(2, seed=1), 3)
    index.search(random_vectors(2, seed=2), 3)
    assert len(copies) == 1  # copied once, at the first search
    extra = random_vectors(10, seed=3)
    index.add(extra)
    _, ids = index.search(extra[5:], 1)
    assert len(copies) == 2 and copies[-1].cpu.ntotal == 60
    np.testing.assert_array_equal(ids[:, 0], [55, 56, 57, 58, 59])  # rows added since

    index.save(tmp_path / "g.faiss")
    assert len(VectorIndex.load(tmp_path / "g.faiss", kind="flat")) == 60
    assert not VectorIndex.create(32, kind="hnsw").uses_gpu  # HNSW stays on the CPU
