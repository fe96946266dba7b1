"""Features of a test set: every image through the requested branches, with its labels."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rvsl.models.rvsl_net import BRANCHES, RVSLNet

IMAGES = ("image", "clear")  # image tensors of a retrieval batch (``clear``: SYN's twins)


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


def embed_batch(
    net: RVSLNet, batch: Mapping[str, Any], branches: Sequence[str] = BRANCHES
) -> dict[str, torch.Tensor]:
    """``feat_<branch>`` of one retrieval batch, each image through each encoder once.

    A batch carrying clear twins (``clear``, SYN with ``data.syn_clear_input=clear``) feeds the
    twins to the clear branch and ``image`` (hazy) to the hazy branch; otherwise ``image`` goes
    through every branch.
    """
    twins = batch.get("clear")
    if twins is None or "clear" not in branches:
        return net.embed(batch["image"], branches[0] if len(branches) == 1 else "both")
    out = net.embed(twins, "clear")
    if "hazy" in branches:
        out |= net.embed(batch["image"], "hazy")
    return out


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
    features: dict[str, list[torch.Tensor]] = {b: [] for b in branches}
    pids, camids, is_query, paths = [], [], [], []
    try:
        for batch in batches:
            images = {k: batch[k].to(device, non_blocking=True) for k in IMAGES if k in batch}
            out = embed_batch(net, images, branches)
            if flip:
                flipped = embed_batch(net, {k: v.flip(-1) for k, v in images.items()}, branches)
                out = {k: (v + flipped[k]) / 2 for k, v in out.items()}
            for b in branches:
                features[b].append(out[f"feat_{b}"].float().cpu())
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
