"""Count the unreadable training images the datasets skipped, in the logs (``data.strict=false``).

The training datasets replace an unreadable image and mark the item ``skipped``; this callback
sums those marks over every part of a batch (``syn``, ``real``) and all ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)

METRIC = "data/skipped_images"


def skipped_in(batch: Any) -> int:
    """Sum of ``skipped`` over the parts of a training batch (``{"syn": {...}, "real": {...}}``)."""
    if not isinstance(batch, Mapping):
        return 0
    if "skipped" in batch:
        return int(torch.as_tensor(batch["skipped"]).sum())
    return sum(skipped_in(part) for part in batch.values())


class SkippedImagesCounter(pl.Callback):
    """Log ``data/skipped_images``, the running total of skipped training images (all ranks).

    The total is summed across ranks every step, logged on step (so at the trainer's
    ``log_every_n_steps``), and kept in checkpoints so a resumed run keeps counting. Rank zero
    warns at the first skip of each epoch and sums up the epoch at its end; the data loader's
    own warnings name the files.
    """

    def __init__(self) -> None:
        self.total = 0  # all ranks
        self.epoch_count = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_count = 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        count = skipped_in(batch)
        if trainer.world_size > 1:  # a collective: every rank calls it every step
            mine = torch.tensor(count, device=pl_module.device, dtype=torch.long)
            count = int(trainer.strategy.reduce(mine, reduce_op="sum"))
        if count and not self.epoch_count and trainer.is_global_zero:
            log.warning(
                "epoch %d: %d unreadable training image(s) skipped in this step and replaced "
                "(data.strict=false); counted as %s",
                trainer.current_epoch,
                count,
                METRIC,
            )
        self.epoch_count += count
        self.total += count
        pl_module.log(METRIC, float(self.total), on_step=True, on_epoch=False, batch_size=1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epoch_count and trainer.is_global_zero:
            log.warning(
                "epoch %d: %d unreadable training image(s) skipped (%d in all)",
                trainer.current_epoch,
                self.epoch_count,
                self.total,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total = int(state_dict.get("total", 0))
