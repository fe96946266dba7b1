"""Validation during fitting: retrieval metrics per (validation set, branch), logged per epoch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from rvsl.evaluation.features import embed_batch
from rvsl.metrics import RetrievalMetric
from rvsl.models.rvsl_net import BRANCHES


class RetrievalValidation:
    """LightningModule hooks for ``val/<set>/<branch>/<metric>`` (fractions in [0, 1]).

    Mixed into :class:`~rvsl.training.module.RVSLModule`, which provides ``net`` and
    ``_in_memory_layout``. The sets are the attached datamodule's ``val_set_names``.
    """

    val_set_names: list[str]
    val_metrics: nn.ModuleDict

    def init_val_metrics(self, names: list[str] | None = None) -> None:
        """One torchmetrics :class:`RetrievalMetric` per (set, branch); DDP gathering is free."""
        self.val_set_names = list(names or [])
        self.val_metrics = nn.ModuleDict(
            {f"{n}_{b}": RetrievalMetric() for n in self.val_set_names for b in BRANCHES}
        )

    def validation_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        name = self.val_set_names[dataloader_idx]
        feats = embed_batch(self.net, self._in_memory_layout(batch))
        for branch in BRANCHES:
            self.val_metrics[f"{name}_{branch}"].update(
                feats[f"feat_{branch}"].float(),
                batch["pid"],
                batch["camid"],
                batch["is_query"],
                batch["index"],
            )

    def on_validation_epoch_end(self) -> None:
        # The metrics gather every process's features, so all processes hold the same values;
        # sync_dist averages identical numbers once per epoch and keeps Lightning quiet.
        distributed = self._world_size() > 1
        for name in self.val_set_names:
            for branch in BRANCHES:
                metric = self.val_metrics[f"{name}_{branch}"]
                for key, value in metric.compute().items():
                    self.log(
                        f"val/{name}/{branch}/{key}",
                        value,
                        sync_dist=distributed,
                        add_dataloader_idx=False,
                    )
                metric.reset()
