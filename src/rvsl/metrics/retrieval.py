"""ReID retrieval as a torchmetrics ``Metric``: accumulate features, rank at ``compute()``."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from rvsl.metrics.distance import METRICS, pairwise_distance
from rvsl.metrics.rank import evaluate_rank


class RetrievalMetric(Metric):
    """mAP, mINP and CMC rank-1/5/10 of a query/gallery split, as fractions in [0, 1].

    Every evaluated image goes through ``update`` with its identity, camera and whether it is a
    query; ``compute`` ranks the gallery for each query under the standard ReID protocol
    (:func:`rvsl.metrics.evaluate_rank`). States are lists concatenated across processes, so
    under DDP each rank feeds its own shard and ``compute`` sees the whole split. A
    distributed sampler pads the last batch with repeated images: pass each image's dataset
    ``indices`` and ``compute`` counts every image once, so DDP numbers equal one process's.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self, max_rank: int = 50, metric: str = "euclidean", normalize: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if max_rank < 10:
            raise ValueError(f"max_rank must be at least 10 to report rank-10, got {max_rank}")
        self.max_rank = max_rank
        self.metric = metric
        self.normalize = normalize
        self.add_state("features", default=[], dist_reduce_fx="cat")
        self.add_state("pids", default=[], dist_reduce_fx="cat")
        self.add_state("camids", default=[], dist_reduce_fx="cat")
        self.add_state("is_query", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(
        self,
        features: Tensor,
        pids: Tensor,
        camids: Tensor,
        is_query: Tensor,
        indices: Tensor | None = None,
    ) -> None:
        """Add N images: ``features`` (N, D), ``pids`` (N,), ``camids`` (N,), ``is_query`` (N,),
        optionally their dataset ``indices`` (N,) so that repeated images count once."""
        if features.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
        n = len(features)
        for name, value in (("pids", pids), ("camids", camids), ("is_query", is_query)):
            if value.shape != (n,):
                raise ValueError(
                    f"{name} must have shape ({n},) to match features, got {tuple(value.shape)}"
                )
        self.features.append(features.detach())
        self.pids.append(pids.detach().long())
        self.camids.append(camids.detach().long())
        # uint8 rather than bool: every distributed backend can gather it.
        self.is_query.append(is_query.detach().to(torch.uint8))
        if indices is not None:
            if indices.shape != (n,):
                raise ValueError(f"indices must have shape ({n},), got {tuple(indices.shape)}")
            self.indices.append(indices.detach().long())

    def compute(self) -> dict[str, Tensor]:
        """Rank the accumulated gallery for every accumulated query."""
        if not isinstance(self.features, Tensor) and len(self.features) == 0:
            raise ValueError("RetrievalMetric.compute() was called before any update()")
        features = dim_zero_cat(self.features)
        pids, camids = dim_zero_cat(self.pids), dim_zero_cat(self.camids)
        is_query = dim_zero_cat(self.is_query).bool()
        indices = dim_zero_cat(self.indices) if len(self.indices) else None
        if indices is not None and indices.numel():
            if len(indices) != len(features):
                raise ValueError("pass indices with every update() or with none")
            keep = _first_occurrences(indices)
            features, pids, camids, is_query = (
                features[keep],
                pids[keep],
                camids[keep],
                is_query[keep],
            )
        num_query = int(is_query.sum())
        if num_query == 0 or num_query == len(is_query):
            raise ValueError(
                f"RetrievalMetric needs both query and gallery images, got {num_query} queries "
                f"and {len(is_query) - num_query} gallery images"
            )
        is_gallery = ~is_query
        distmat = pairwise_distance(
            features[is_query], features[is_gallery], self.metric, self.normalize
        )
        result = evaluate_rank(
            distmat,
            pids[is_query],
            pids[is_gallery],
            camids[is_query],
            camids[is_gallery],
            max_rank=self.max_rank,
        )
        cmc = result["cmc"]
        values = {
            "mAP": result["mAP"],
            "mINP": result["mINP"],
            "rank1": cmc[0],
            "rank5": cmc[4],
            "rank10": cmc[9],
        }
        return {k: torch.tensor(float(v), device=self.device) for k, v in values.items()}


def _first_occurrences(indices: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct value, in ascending value order."""
    order = torch.argsort(indices, stable=True)
    sorted_values = indices[order]
    first = torch.ones_like(sorted_values, dtype=torch.bool)
    first[1:] = sorted_values[1:] != sorted_values[:-1]
    return order[first]
