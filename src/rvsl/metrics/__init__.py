"""Retrieval evaluation: distances, the ReID ranking protocol, re-ranking, a torchmetrics Metric."""

from rvsl.metrics.distance import pairwise_distance
from rvsl.metrics.rank import evaluate_rank
from rvsl.metrics.rerank import k_reciprocal_rerank
from rvsl.metrics.retrieval import RetrievalMetric

__all__ = ["RetrievalMetric", "evaluate_rank", "k_reciprocal_rerank", "pairwise_distance"]
