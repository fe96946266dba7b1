"""The vector index behind rvsl-search: nearest gallery embeddings of a query, through FAISS.

A :class:`VectorIndex` holds a gallery's embeddings; row ``i`` is the ``i``-th vector added
(the metadata table numbers its rows the same way). ``search`` returns the ``k`` nearest rows
of each query with distances in the metric's own units, not FAISS's internal scores:

- ``euclidean``: the Euclidean distance, as ``rvsl.metrics`` ranks by (FAISS works with its
  square; the square root is taken here);
- ``cosine``: 1 - cosine similarity, in [0, 2] (vectors are L2-normalised on the way in and
  FAISS ranks by inner product).

Three kinds:

- ``flat`` (the default): exact search, every query against every vector; right up to a few
  hundred thousand images on a CPU (docs/search.md has the measured times).
- ``ivf``: an inverted file (``IndexIVFFlat``), for millions of images. k-means splits the
  gallery into ``nlist`` lists (default about 4 * sqrt(n)) and a query scans the ``nprobe``
  nearest lists only (default nlist / 16, at least 16): approximate, and about 1/16 of the
  work of exact search for a lone query (batches gain less: IVF scans lists query by query).
  k-means needs ``39 * nlist`` vectors (FAISS's minimum): until an ``add`` brings that many,
  the vectors stay in a flat index (exact), then it trains on all it holds (from about 24,300
  vectors with the default ``nlist``, chosen for the vectors held at that moment).
- ``hnsw``: a graph (``IndexHNSWFlat``): approximate, fast queries without training, but slow
  to build and larger in memory.

With faiss-gpu and a visible GPU, ``flat`` and ``ivf`` indexes search on the GPU(s); files
always hold the CPU index, so any machine reads them.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rvsl.utils.files import atomic_write

KINDS = ("flat", "ivf", "hnsw")
METRICS = ("euclidean", "cosine")

FAISS_MISSING = "rvsl-search needs FAISS: pip install 'rvsl[search]'"
MIN_POINTS_PER_LIST = 39  # FAISS's k-means minimum of training vectors per list
TRAIN_POINTS_PER_LIST = 64  # k-means runs on a sample of this many per list (time, not quality)
MAX_NLIST = 65536
HNSW_EF_SEARCH = 64  # candidates an HNSW search keeps (at least k)
GPU_MAX_K = 2048  # faiss-gpu's largest k (and nprobe)

UseGpu = bool | Literal["auto"]


class VectorIndexError(ValueError):
    """A problem the user can fix: a bad setting, wrong vectors, an unreadable index file."""


class FaissMissingError(VectorIndexError, ImportError):
    """FAISS is not installed."""


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:
        raise FaissMissingError(FAISS_MISSING) from err
    return faiss


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: about 4 * sqrt(n), between 1 and 65536."""
    return int(min(max(round(4 * math.sqrt(n)), 1), MAX_NLIST))


def default_nprobe(nlist: int) -> int:
    """Lists an IVF search scans: nlist / 16, at least 16 (at most nlist, and 2048 for GPUs)."""
    return min(nlist, max(16, nlist // 16), GPU_MAX_K)


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu."""
    return int(getattr(_faiss(), "get_num_gpus", lambda: 0)())


def _positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise VectorIndexError(f"{name} must be a positive integer, got {value!r}")


def _check_choice(value: Any, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise VectorIndexError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")


def _rows(rows: np.ndarray) -> str:
    """``rows 3, 17, 42 and 5 more`` for an error message."""
    shown = ", ".join(str(r) for r in rows[:3])
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


class VectorIndex:
    """Embeddings of a gallery, searchable by nearest neighbours (see the module docstring).

    Make one with :meth:`create` or :meth:`load`; ids are row numbers in insertion order.
    """

    def __init__(
        self,
        index: Any,
        kind: str,
        metric: str,
        nlist: int | None = None,
        nprobe: int | None = None,
        use_gpu: UseGpu = "auto",
    ) -> None:
        self._index = index  # the CPU index: a flat one while an IVF index is untrained
        self._kind = kind
        self._metric = metric
        self._nlist = nlist  # requested; None: default_nlist at training
        self._nprobe = nprobe
        self._use_gpu = use_gpu
        self._gpu_index: Any = None  # a GPU copy of _index, made at the first search
        if nprobe is not None and self.trained and kind == "ivf":
            index.nprobe = nprobe

    # ------------------------------------------------------------------ making one
    @classmethod
    def create(
        cls,
        dim: int,
        kind: str = "flat",
        metric: str = "euclidean",
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int = 32,
        use_gpu: UseGpu = "auto",
    ) -> VectorIndex:
        """An empty index of ``dim``-dimensional vectors.

        ``nlist``/``nprobe``: IVF lists and lists scanned per query (defaults in the module
        docstring); ``hnsw_m``: HNSW graph links per vector; ``use_gpu``: "auto" searches on
        the GPU when faiss-gpu sees one, True requires one, False never.
        """
        _positive_int(dim, "dim")
        _check_choice(kind, KINDS, "index kind")
        _check_choice(metric, METRICS, "metric")
        _positive_int(nlist, "nlist", allow_none=True)
        _positive_int(nprobe, "nprobe", allow_none=True)
        if kind != "ivf" and (nlist, nprobe) != (None, None):
            raise VectorIndexError(
                f"nlist and nprobe are IVF settings: kind={kind!r} takes neither"
            )
        if kind == "hnsw" and (
            isinstance(hnsw_m, bool) or not isinstance(hnsw_m, int) or hnsw_m < 2
        ):
            raise VectorIndexError(f"hnsw_m must be an integer of at least 2, got {hnsw_m!r}")
        _check_use_gpu(use_gpu)
        faiss = _faiss()
        faiss_metric = _FAISS_METRIC[metric](faiss)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(int(dim), hnsw_m, faiss_metric)
            index.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            index = faiss.IndexFlat(int(dim), faiss_metric)  # ivf: exact until trained
        return cls(index, kind, metric, nlist, nprobe, use_gpu)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        kind: str | None = None,
        metric: str | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        use_gpu: UseGpu = "auto",
    ) -> VectorIndex:
        """The index :meth:`save` wrote to ``path``.

        ``kind`` and ``metric`` default to what the file holds; given, they must match it (an
        IVF index saved before training holds a flat index: pass ``kind="ivf"`` so it trains
        once it has enough vectors, with ``nlist`` then). ``nprobe`` replaces the saved one.
        """
        if kind is not None:
            _check_choice(kind, KINDS, "index kind")
        if metric is not None:
            _check_choice(metric, METRICS, "metric")
        path = Path(path)
        if not path.is_file():
            raise VectorIndexError(f"vector index {path} does not exist")
        faiss = _faiss()
        _check_use_gpu(use_gpu)
        try:
            index = faiss.read_index(str(path))  # streams: no second copy of an 8 GB file
        except RuntimeError as err:
            detail = re.sub(r"^.*?\.cpp:\d+: ", "", str(err).splitlines()[0] if str(err) else "")
            raise VectorIndexError(f"{path} is not a FAISS index, or is damaged: {detail}") from err
        found_kind = _kind_of(index, faiss)
        if found_kind is None:
            raise VectorIndexError(
                f"{path} holds a FAISS {type(index).__name__}, not an index rvsl-search writes"
            )
        found_metric = {faiss.METRIC_L2: "euclidean", faiss.METRIC_INNER_PRODUCT: "cosine"}.get(
            index.metric_type
        )
        if found_metric is None:
            raise VectorIndexError(f"{path} holds an index with an unsupported FAISS metric")
        if kind is not None and kind not in (found_kind, "ivf" if found_kind == "flat" else None):
            raise VectorIndexError(f"{path} holds a {found_kind} index, not {kind}")
        if metric is not None and metric != found_metric:
            raise VectorIndexError(f"{path} holds a {found_metric} index, not {metric}")
        _positive_int(nlist, "nlist", allow_none=True)
        _positive_int(nprobe, "nprobe", allow_none=True)
        return cls(index, kind or found_kind, found_metric, nlist, nprobe, use_gpu)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the (CPU) index to ``path`` atomically: a reader sees the old file or the new."""
        faiss = _faiss()
        atomic_write(
            path, lambda out: faiss.write_index(self._index, faiss.PyCallbackIOWriter(out.write))
        )

    # ------------------------------------------------------------------ what it holds
    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def metric(self) -> str:
        return self._metric

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def trained(self) -> bool:
        """False only for an IVF index still too small to train (it searches exactly)."""
        return self._kind != "ivf" or not _is_flat(self._index)

    @property
    def nlist(self) -> int | None:
        """IVF lists of a trained IVF index; None otherwise."""
        return int(self._index.nlist) if self._kind == "ivf" and self.trained else None

    @property
    def nprobe(self) -> int | None:
        """Lists a trained IVF index scans per query; None otherwise."""
        return int(self._index.nprobe) if self._kind == "ivf" and self.trained else None

    @property
    def uses_gpu(self) -> bool:
        """Whether searches run on the GPU."""
        return self._use_gpu is not False and self._kind != "hnsw" and gpu_count() > 0

    def __repr__(self) -> str:
        ivf = f", nlist={self.nlist}, nprobe={self.nprobe}" if self._kind == "ivf" else ""
        return (
            f"VectorIndex(kind={self._kind!r}, metric={self._metric!r}, dim={self.dim}, "
            f"n={len(self)}{ivf})"
        )

    # ------------------------------------------------------------------ adding, searching
    def add(self, vectors: np.ndarray | torch.Tensor) -> None:
        """Append ``vectors`` (n, dim), as rows ``len(self)`` .. ``len(self) + n - 1``.

        Floating point of any precision (stored as float32); NaN or infinite values are
        refused, and so, for cosine, are all-zero vectors (they have no direction).
        """
        x = self._prepared(vectors, "vectors")
        if not len(x):
            return
        if self.trained:
            self._index.add(x)
        else:
            self._add_before_training(x)
        self._gpu_index = None  # stale: copied again at the next search

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows of each query: ``(distances, ids)``, both (m, k), nearest first.

        Distances are in the metric's units (Euclidean distance, or 1 - cosine similarity),
        float32; where fewer than ``k`` neighbours exist (``k > len(self)``, or an IVF search
        whose lists hold fewer), the rest are id -1 at distance inf.
        """
        _positive_int(k, "k")
        q = self._prepared(queries, "queries")
        distances = np.full((len(q), k), np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        found_k = min(k, len(self))  # FAISS would pad to k itself; this asks it for less work
        if found_k == 0 or len(q) == 0:
            return distances, ids
        faiss = _faiss()
        if self._kind == "hnsw":
            ef = max(self._index.hnsw.efSearch, found_k)
            params = faiss.SearchParametersHNSW(efSearch=ef)
            raw, found = self._index.search(q, found_k, params=params)
        else:
            raw, found = self._searcher(found_k).search(q, found_k)
        if self._metric == "euclidean":
            near = np.sqrt(np.maximum(raw, 0.0))  # FAISS gives squared L2
        else:
            near = np.clip(1.0 - raw, 0.0, 2.0)  # inner product of unit vectors = cosine
        near[found < 0] = np.inf
        distances[:, :found_k] = near
        ids[:, :found_k] = found
        return distances, ids

    # ------------------------------------------------------------------ internals
    def _prepared(self, vectors: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
        """``vectors`` as a C-contiguous float32 (n, dim) array, checked (normalised: cosine)."""
        if isinstance(vectors, torch.Tensor):
            if not vectors.is_floating_point():
                raise VectorIndexError(f"{name} must be floating point, got {vectors.dtype}")
            vectors = vectors.detach().to("cpu", torch.float32).numpy()
        x = np.asarray(vectors)
        if x.dtype.kind != "f":
            raise VectorIndexError(f"{name} must be floating point, got {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise VectorIndexError(
                f"{name} must be an (n, {self.dim}) array for this {self.dim}-dimensional "
                f"index, got shape {x.shape}"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) and not (np.isfinite(x.min()) and np.isfinite(x.max())):  # no n x dim temp
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise VectorIndexError(f"{name} hold NaN or infinite values ({_rows(bad)})")
        if self._metric == "cosine" and len(x):
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))
            bad = np.flatnonzero(~((norms > 0) & np.isfinite(norms)))
            if len(bad):
                raise VectorIndexError(
                    f"{name} hold all-zero (or overflowing) vectors, which have no cosine "
                    f"distance ({_rows(bad)})"
                )
            x = x / norms[:, None]  # a new array: the caller's is left as it was
        return x

    def _add_before_training(self, x: np.ndarray) -> None:
        """IVF, untrained: hold ``x`` exactly, or train on everything once there is enough."""
        held = len(self)
        nlist = self._nlist or default_nlist(held + len(x))
        if held + len(x) < MIN_POINTS_PER_LIST * nlist:
            self._index.add(x)
            return
        if held:
            x = np.concatenate([self._index.reconstruct_n(0, held), x])
        faiss = _faiss()
        ivf = faiss.index_factory(self.dim, f"IVF{nlist},Flat", self._index.metric_type)
        ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST  # FAISS samples the rest out
        ivf.cp.spherical = self._metric == "cosine"  # unit-length centroids for unit vectors
        ivf.train(x)
        ivf.add(x)
        ivf.nprobe = self._nprobe or default_nprobe(nlist)
        self._index = ivf

    def _searcher(self, k: int) -> Any:
        """The index to search: a GPU copy where there is a GPU to use, else the CPU one."""
        if self._use_gpu is False or k > GPU_MAX_K or gpu_count() == 0:
            return self._index
        if self._gpu_index is None:
            self._gpu_index = _faiss().index_cpu_to_all_gpus(self._index)
        return self._gpu_index


_FAISS_METRIC = {
    "euclidean": lambda faiss: faiss.METRIC_L2,
    "cosine": lambda faiss: faiss.METRIC_INNER_PRODUCT,  # of L2-normalised vectors
}


def _is_flat(index: Any) -> bool:
    return isinstance(index, _faiss().IndexFlat)  # IndexFlatL2 and IndexFlatIP included


def _kind_of(index: Any, faiss: Any) -> str | None:
    if isinstance(index, faiss.IndexFlat):
        return "flat"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf"
    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    return None


def _check_use_gpu(use_gpu: Any) -> None:
    if not (isinstance(use_gpu, bool) or use_gpu == "auto"):
        raise VectorIndexError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")
    if use_gpu is True and gpu_count() == 0:
        raise VectorIndexError(
            "use_gpu=True needs faiss-gpu and a visible GPU; this FAISS sees none"
        )
