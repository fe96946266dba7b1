"""Count the unreadable training images the datasets skipped, in the logs (``data.strict=false``).

The training datasets replace an unreadable image and mark the item with ``skipped_index``, the
index of the entry it stands in for (-1: none). This callback counts the distinct entries so
marked, per part of a batch (``syn``, ``real``) and over all ranks: a bad file that is drawn
every epoch, or by several ranks, counts once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)

METRIC = "data/skipped_images"


def skipped_indices(batch: Any) -> dict[str, torch.Tensor]:
    """Per part of a training batch (``{"syn": {...}, "real": {...}}``, or one part alone,
    named ""), the ``skipped_index`` of its items, flat."""
    if not isinstance(batch, Mapping):
        return {}
    if "skipped_index" in batch:
        return {"": torch.as_tensor(batch["skipped_index"]).flatten().long()}
    return {name: t for name, part in batch.items() for t in skipped_indices(part).values()}


class SkippedImagesCounter(pl.Callback):
    """Log ``data/skipped_images``, the number of distinct unreadable training images so far.

    The entries met are gathered from all ranks every step; the count is logged on step (so at
    the trainer's ``log_every_n_steps``) and the entries are kept in checkpoints, so a resumed
    run keeps counting. Rank zero warns at the first new one of each epoch and sums up the
    epoch at its end; the data loader's own warnings name the files.
    """

    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()  # (part, dataset index), all ranks
        self.epoch_seen: set[tuple[str, int]] = set()
        self.epoch_new = 0  # of epoch_seen, those first met this epoch

    @property
    def total(self) -> int:
        return len(self.seen)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_seen, self.epoch_new = set(), 0

    def _gather(self, trainer: pl.Trainer, device: Any, parts: dict[str, torch.Tensor]) -> Any:
        """Every rank's entries per part (a collective: every rank calls it every step)."""
        names = sorted(parts)
        local = torch.cat([parts[n].to(device) for n in names])
        gathered = trainer.strategy.all_gather(local).reshape(trainer.world_size, -1)
        sizes = [len(parts[n]) for n in names]
        return dict(zip(names, torch.split(gathered, sizes, dim=1), strict=True))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        parts = skipped_indices(batch)
        if parts and trainer.world_size > 1:
            parts = self._gather(trainer, pl_module.device, parts)
        met = {(name, i) for name, t in parts.items() for i in t[t >= 0].tolist()}
        new = met - self.seen
        if new and not self.epoch_new and trainer.is_global_zero:
            log.warning(
                "epoch %d: %d unreadable training image(s) skipped in this step and replaced "
                "(data.strict=false); counted once each as %s",
                trainer.current_epoch,
                len(new),
                METRIC,
            )
        self.seen |= new
        self.epoch_seen |= met
        self.epoch_new += len(new)
        pl_module.log(METRIC, float(self.total), on_step=True, on_epoch=False, batch_size=1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epoch_seen and trainer.is_global_zero:
            log.warning(
                "epoch %d: %d unreadable training image(s) skipped, %d of them new (%d in all)",
                trainer.current_epoch,
                len(self.epoch_seen),
                self.epoch_new,
                self.total,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "seen": sorted([part, index] for part, index in self.seen)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seen = {(str(part), int(index)) for part, index in state_dict.get("seen", [])}
