"""Features of a test set: every image through the requested branches, with its labels."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from rvsl.inference.engine import IMAGES, EmbeddingModule, embed_batch, predict_to_shards
from rvsl.models.rvsl_net import BRANCHES, RVSLNet

__all__ = [
    "EvaluationError",
    "SplitFeatures",
    "embed_batch",
    "extract_features",
    "extract_features_on",
]


class EvaluationError(ValueError):
    """A test set or option that cannot be evaluated; the message names it."""


@dataclass
class SplitFeatures:
    """Embeddings of one test set (queries first, then gallery) and their labels."""

    features: dict[str, torch.Tensor]  # branch -> (N, D) float32 on CPU
    pids: torch.Tensor
    camids: torch.Tensor
    is_query: torch.Tensor  # bool
    paths: list[str] = field(default_factory=list)

    @property
    def query(self) -> torch.Tensor:
        return torch.nonzero(self.is_query).squeeze(1)

    @property
    def gallery(self) -> torch.Tensor:
        return torch.nonzero(~self.is_query).squeeze(1)


@torch.no_grad()
def extract_features(
    net: RVSLNet,
    batches: Iterable[dict[str, Any]],
    branches: Sequence[str] = BRANCHES,
    device: str | torch.device = "cpu",
    flip: bool = False,
) -> SplitFeatures:
    """Embed every image of a retrieval loader through each branch.

    ``flip`` averages each feature with that of the horizontally flipped image (the usual
    ReID test-time augmentation). Features come back as float32 on the CPU. A batch with clear
    twins (``clear``) is embedded as :func:`embed_batch` says.
    """
    was_training = net.training
    net.eval()
    embedder = EmbeddingModule(net, branches, flip=flip)  # the same step rvsl-search runs
    features: dict[str, list[torch.Tensor]] = {b: [] for b in branches}
    pids, camids, is_query, paths = [], [], [], []
    try:
        for index, batch in enumerate(batches):
            moved = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in IMAGES}
            out = embedder.predict_step(batch | moved, index)
            for b in branches:
                features[b].append(out[f"feat_{b}"].cpu())
            pids.append(batch["pid"])
            camids.append(batch["camid"])
            is_query.append(torch.as_tensor(batch["is_query"]).bool())
            paths.extend(batch.get("path", []))
    finally:
        net.train(was_training)
    if not pids:
        raise EvaluationError("the test set holds no images")
    return SplitFeatures(
        {b: torch.cat(f) for b, f in features.items()},
        torch.cat(pids).long(),
        torch.cat(camids).long(),
        torch.cat(is_query),
        paths,
    )


def extract_features_on(
    trainer: pl.Trainer,
    net: RVSLNet,
    loader: DataLoader,
    branches: Sequence[str],
    flip: bool,
    shard_dir: str | Path,
) -> SplitFeatures | None:
    """:func:`extract_features` on every device of ``trainer`` (``rvsl-eval devices=N``): each
    rank embeds its share through ``Trainer.predict`` and writes a shard into ``shard_dir``;
    rank 0 gets the whole test set in loader order, the other ranks None."""
    module = EmbeddingModule(net.eval(), branches, flip=flip)
    merged = predict_to_shards(trainer, module, loader, shard_dir)
    if merged is None:
        return None
    if not len(merged.get("pid", ())):
        raise EvaluationError("the test set holds no images")
    return SplitFeatures(
        {b: merged[f"feat_{b}"] for b in branches},
        merged["pid"].long(),
        merged["camid"].long(),
        torch.as_tensor(merged["is_query"]).bool(),
        list(merged.get("path", [])),
    )
