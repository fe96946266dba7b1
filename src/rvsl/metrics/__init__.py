"""Retrieval evaluation: distance matrices, the ReID ranking protocol and a torchmetrics Metric."""

from rvsl.metrics.distance import pairwise_distance
from rvsl.metrics.rank import evaluate_rank
from rvsl.metrics.retrieval import RetrievalMetric

__all__ = ["RetrievalMetric", "evaluate_rank", "pairwise_distance"]
