"""Retrieval evaluation: distances, the ReID ranking protocol, re-ranking, a torchmetrics Metric.

Every metric here is a fraction in [0, 1]. ``rvsl.metrics.rank_reference`` is the per-query
specification of the ranking protocol (a readable loop, not for use on a hot path).
"""

from rvsl.metrics.distance import pairwise_distance
from rvsl.metrics.rank import evaluate_rank
from rvsl.metrics.rerank import k_reciprocal_rerank
from rvsl.metrics.retrieval import RetrievalMetric

__all__ = ["RetrievalMetric", "evaluate_rank", "k_reciprocal_rerank", "pairwise_distance"]
