"""Training callbacks: a dehazing panel per validation, to watch the generator learn."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from rvsl.evaluation.image_logging import log_picture
from rvsl.evaluation.pictures import dehazing_picture, first_images


class DehazingPanelCallback(pl.Callback):
    """After every ``every_n_epochs``-th validation of a fit, dehaze the same ``num_images``
    SYN test images and log the panel (hazy | dehazed | clear) as ``pictures/dehazing_SYN``.

    The images are the first of ``datamodule.syn_test_pairs_dataloader()``, loaded once, so the
    panels of successive epochs compare. Without a SYN test set, the first images of the first
    validation loader are used (no ground truth column). The baseline stage is skipped: its
    generators are never trained.
    """

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1) -> None:
        if num_images < 1 or every_n_epochs < 1:
            raise ValueError("num_images and every_n_epochs must be >= 1")
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self._images: tuple[str, torch.Tensor, torch.Tensor | None] | None = None

    def fixed_images(self, trainer: pl.Trainer) -> tuple[str, torch.Tensor, torch.Tensor | None]:
        """(test set name, hazy, clear or None), loaded on first use and then cached."""
        if self._images is None:
            datamodule = getattr(trainer, "datamodule", None)
            names = list(getattr(datamodule, "val_set_names", None) or [])
            if "SYN" in names and hasattr(datamodule, "syn_test_pairs_dataloader"):
                loader = datamodule.syn_test_pairs_dataloader()
                hazy, clear = first_images(loader, ("hazy", "clear"), self.num_images)
                self._images = ("SYN", hazy, clear)
            else:
                loaders = trainer.val_dataloaders
                first = loaders[0] if isinstance(loaders, list | tuple) else loaders
                (hazy,) = first_images(first, ("image",), self.num_images)
                self._images = (names[0] if names else "val", hazy, None)
        return self._images

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.state.fn != TrainerFn.FITTING:  # trainer.validate: stage_pictures draws it
            return
        if getattr(pl_module, "stage", None) == "baseline":
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        name, hazy, clear = self.fixed_images(trainer)
        panel = dehazing_picture(pl_module.net, hazy, clear, pl_module.device)
        log_picture(trainer.loggers, f"pictures/dehazing_{name}", panel, step=trainer.global_step)
