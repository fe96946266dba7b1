"""The embedding engine: images -> features through Lightning's ``Trainer.predict``.

One path for every command that embeds (``rvsl-search index``, ``rvsl-eval``, the
:class:`~rvsl.inference.Reidentifier`): the loader decodes in worker processes, the network
runs on whatever accelerator the trainer has, and with ``devices=N`` each DDP rank embeds its
share and writes it to a shard file (:class:`ShardWriter`); :func:`read_shards` puts the
shards back into dataset order on rank 0. Lightning's predict sampler gives every image to
exactly one rank (no padding duplicates), and records which dataset indices each batch held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor

from rvsl.data.transforms import undo_normalize
from rvsl.inference.haze import DEFAULT_HAZE_THRESHOLD, embed_by_choice, haze_score
from rvsl.models.rvsl_net import BRANCHES, RVSLNet
from rvsl.utils.files import atomic_torch_save

IMAGES = ("image", "clear")  # image tensors of a batch (``clear``: SYN's clear twins)


def embed_batch(
    net: RVSLNet, batch: Mapping[str, Any], branches: Sequence[str] = BRANCHES
) -> dict[str, Tensor]:
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


class EmbeddingModule(pl.LightningModule):
    """A network as ``predict_step``: each batch -> its features, plus the batch's labels.

    Two modes. ``branches`` (evaluation): ``feat_<branch>`` for each listed encoder. ``choice``
    (search, :data:`rvsl.inference.haze.BRANCH_CHOICES`): one ``feature`` per image, with its
    ``haze`` score and the ``branch`` that embedded it. ``flip`` averages each feature with the
    mirrored image's. Every other tensor or list in the batch (identities, cameras, indices)
    is passed through, so a writer can keep it next to the features.
    """

    def __init__(
        self,
        net: RVSLNet,
        branches: Sequence[str] = BRANCHES,
        choice: str | None = None,
        flip: bool = False,
        normalized_input: bool = False,
        haze_threshold: float = DEFAULT_HAZE_THRESHOLD,
    ) -> None:
        super().__init__()
        self.net = net
        self.branches = tuple(branches)
        self.choice = choice
        self.flip = flip
        self.normalized_input = normalized_input
        self.haze_threshold = float(haze_threshold)

    def forward(self, images: dict[str, Tensor]) -> dict[str, Any]:
        if self.choice is None:
            out = embed_batch(self.net, images, self.branches)
            return {f"feat_{b}": out[f"feat_{b}"] for b in self.branches}
        scores = haze_score(self._unnormalized(images["image"]))
        feats, used = embed_by_choice(
            self.net, images["image"], self.choice, scores > self.haze_threshold
        )
        return {"feature": feats, "haze": scores, "branch": used}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        images = {k: batch[k] for k in IMAGES if k in batch}
        out = self(images)
        if self.flip:
            mirrored = self({k: v.flip(-1) for k, v in images.items()})
            for key, value in out.items():
                if key.startswith("feat"):
                    out[key] = (value + mirrored[key]) / 2
        passed = {k: v for k, v in batch.items() if k not in IMAGES}
        return passed | {k: v.float() if isinstance(v, Tensor) else v for k, v in out.items()}

    def _unnormalized(self, images: Tensor) -> Tensor:
        """Images back in [0, 1] when the network takes ImageNet-normalised input."""
        return undo_normalize(images) if self.normalized_input else images


class ShardWriter(BasePredictionWriter):
    """Keeps this rank's predictions (on the CPU) with their dataset indices, and writes them to
    ``folder/shard-<rank>.pt`` when the pass ends. No predictions pile up in the trainer."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.folder = Path(folder)
        self._parts: list[dict[str, Any]] = []

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_indices is None:
            raise RuntimeError("the predict loader must be a map-style dataset with a sampler")
        part = {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in prediction.items()}
        self._parts.append(part | {"_index": torch.as_tensor(list(batch_indices))})

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts = []

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(self._parts, self.folder / f"shard-{trainer.global_rank}.pt")
        self._parts = []


def read_shards(folder: str | Path, world_size: int) -> dict[str, Any]:
    """Every rank's shard, merged in dataset order: tensors concatenated, lists joined."""
    parts: list[dict[str, Any]] = []
    for rank in range(world_size):
        parts.extend(torch.load(Path(folder) / f"shard-{rank}.pt", weights_only=False))
    if not parts:
        return {}
    order = torch.argsort(torch.cat([p["_index"] for p in parts]))
    merged: dict[str, Any] = {}
    for key in parts[0]:
        if key == "_index":
            continue
        if isinstance(parts[0][key], Tensor):
            merged[key] = torch.cat([p[key] for p in parts])[order]
        else:
            joined = [item for p in parts for item in p[key]]
            merged[key] = [joined[i] for i in order.tolist()]
    return merged


def predict_trainer(accelerator: str = "auto", devices: int | str = 1, **kwargs: Any) -> pl.Trainer:
    """A quiet trainer for embedding: no logger, no checkpoints; DDP when ``devices`` > 1."""
    many = devices == "auto" or (isinstance(devices, int) and devices > 1)
    return pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if many else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


def predict_to_shards(
    trainer: pl.Trainer, module: EmbeddingModule, loader: Any, folder: str | Path
) -> dict[str, Any] | None:
    """Embed ``loader`` on every rank of ``trainer``; rank 0 gets the merged result (dataset
    order), the other ranks get None. ``folder`` holds the shards meanwhile."""
    writer = next((c for c in trainer.callbacks if isinstance(c, ShardWriter)), None)
    if writer is None:
        writer = ShardWriter(folder)
        trainer.callbacks.append(writer)
    writer.folder = Path(folder)
    trainer.predict(module, loader, return_predictions=False)
    trainer.strategy.barrier("shards written")
    merged = read_shards(folder, trainer.world_size) if trainer.is_global_zero else None
    trainer.strategy.barrier("shards read")
    if trainer.is_global_zero:
        for shard in Path(folder).glob("shard-*.pt"):
            shard.unlink()
    return merged
