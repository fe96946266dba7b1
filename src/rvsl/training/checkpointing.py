"""Checkpoints that survive kills: written atomically, and a ``last.ckpt`` kept fresh for resuming.

:class:`AtomicCheckpointIO` writes every Lightning checkpoint to a temporary file beside the
target and renames it into place, so a kill while saving leaves the previous file whole.
:class:`LastCheckpoint` keeps ``checkpoints/last.ckpt`` recent: every few training batches, at
the end of every epoch, and when the job is pre-empted (SIGTERM). :func:`keep_csv_history`
keeps a resumed run's CSV metrics. :func:`selected_checkpoint` names the checkpoint a run's
``selection`` rule picks: ``last.ckpt``, or ``ModelCheckpoint``'s best epoch on VAL.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from rvsl.training.rng_state import collect_rng_states, restore_rng_states
from rvsl.utils.files import atomic_torch_save

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, with local files written by :func:`atomic_torch_save`.

    Loading is the parent's (``weights_only`` as Lightning passes it); remote URLs
    (``s3://``...) keep the parent's fsspec transaction.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_torch_save(checkpoint, path)


def keep_csv_history(loggers: Iterable[Any]) -> None:
    """Keep the rows a resumed run's ``metrics.csv`` already holds (CSVLogger deletes the file
    when it starts); new rows are appended under the same header."""
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file() or not path.stat().st_size:
            continue
        text = path.read_bytes()
        with warnings.catch_warnings():  # "... will be deleted": it is put back
            warnings.filterwarnings("ignore", message=".*exists and is not empty")
            writer = logger.experiment  # deletes the file
        path.write_bytes(text)
        header = text.decode().splitlines()[0]
        writer.metrics_keys = next(csv.reader([header]))


class LastCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/<filename>.ckpt`` fresh so that ``ckpt_path=last`` resumes a killed run.

    Saved every ``every_n_batches`` training batches (batches, not ``global_step``, which counts
    every optimizer step: up to 3 per batch here), at the end of every training epoch, at the
    end of training, and on SIGTERM (cluster pre-emption; logged at rank zero). Every rank calls
    ``trainer.save_checkpoint`` (only rank zero writes). A Lightning ``Checkpoint`` subclass, so
    its epoch-end hook runs after the LightningModule's, which steps the per-epoch schedulers:
    the saved scheduler state includes that epoch's step. The best checkpoint by mAP stays
    ``ModelCheckpoint``'s, with ``selection=val`` (with ``save_last: false``: one writer per
    file); with ``selection=last`` this file is the selected checkpoint.

    Resuming from any save continues as the uninterrupted run would have:

    * global step, epoch, batch index, optimizer and scheduler states, image pools, the
      best-checkpoint bookkeeping and this callback's batch count continue from the file;
    * the training loaders continue their passes at the next batch: Lightning saves and
      restores their places (``rvsl.data.loaders``), and augmentations are seeded per item, so
      the batches after a resume, pixels included, are the uninterrupted run's;
    * every checkpoint carries the global random states (torch, CUDA, numpy, python;
      ``rng_states``, see ``rvsl.training.rng_state``), set again when training starts, so
      image-pool draws continue too.

    A save is skipped on the last batch of an epoch: Lightning would resume from it as if the
    epoch had ended, skipping that epoch's validation and scheduler step. The epoch-end save
    follows. A SIGTERM during validation saves nothing (validation cannot resume mid-way: the
    retrieval metrics would see only part of the test set); ``last.ckpt`` then holds the state
    from before validation began at most ``every_n_batches`` batches earlier, and the resumed
    run repeats those batches and the validation.

    Args:
        dirpath: folder of the checkpoint (``${paths.output_dir}/checkpoints``).
        filename: file name without ``.ckpt``.
        every_n_batches: save every this many training batches; 0 = only at epoch ends and on
            SIGTERM.
    """

    def __init__(self, dirpath: str, filename: str = "last", every_n_batches: int = 50) -> None:
        if every_n_batches < 0:
            raise ValueError(f"every_n_batches must be >= 0, not {every_n_batches}")
        self.dirpath = str(dirpath)
        self.filename = filename
        self.every_n_batches = every_n_batches
        self.batches = 0  # training batches seen, over resumes
        self.last_model_path = ""  # where the newest save is (read by error messages)
        self._saved_at: tuple[int, int] | None = None  # (global step, batches) of the last save
        self._resumed = False
        self._rng_states: dict[str, Any] | None = None  # from the checkpoint resumed

    @property
    def path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches = int(state_dict.get("batches", 0))
        self._resumed = True
        if os.path.isfile(self.path):
            self.last_model_path = self.path

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Every checkpoint (this callback's or another's) gets the global random states."""
        checkpoint["rng_states"] = collect_rng_states()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep the saved random states; they are set when training starts, after the set-up
        that would otherwise draw from them."""
        self._rng_states = checkpoint.get("rng_states")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._rng_states is not None:
            restore_rng_states(self._rng_states)
            self._rng_states = None
        if self._resumed and trainer.is_global_zero:
            log.info(
                "resumed at epoch %d, global step %d (%d training batches done)",
                trainer.current_epoch,
                trainer.global_step,
                self.batches,
            )

    # ------------------------------------------------------------------ saving
    def save(self, trainer: pl.Trainer) -> None:
        """Write the checkpoint now (call on every rank)."""
        trainer.save_checkpoint(self.path, weights_only=False)  # the full training state
        self.last_model_path = self.path
        self._saved_at = (trainer.global_step, self.batches)

    def _may_save(self, trainer: pl.Trainer) -> bool:
        return (
            trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and not trainer.fast_dev_run
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self.batches += 1
        if not self.every_n_batches or self.batches % self.every_n_batches:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch-end save follows; see the class docstring
        if self._may_save(trainer):
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._may_save(trainer):
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._may_save(trainer) and self._saved_at != (trainer.global_step, self.batches):
            self.save(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or not self._may_save(trainer):
            return
        if trainer.validating:
            where = (
                f"{self.last_model_path} (from before this validation)"
                if self.last_model_path
                else "no checkpoint yet"
            )
            if trainer.is_global_zero:
                log.warning("pre-empted during validation: not saved; last checkpoint: %s", where)
            return
        if self._saved_at != (trainer.global_step, self.batches):
            self.save(trainer)
        if trainer.is_global_zero:
            log.warning(
                "pre-empted: saved %s (epoch %d, global step %d); resume with ckpt_path=last",
                self.path,
                trainer.current_epoch,
                trainer.global_step,
            )


# ------------------------------------------------------------------ selection
@dataclass(frozen=True)
class SelectedCheckpoint:
    """The checkpoint a run's ``selection`` rule picked after fitting.

    ``description`` says which epoch and why, for people ("last epoch (epoch 12)"); ``score``
    is its VAL hazy-branch mAP when the rule read one (``val``), else None.
    """

    path: str
    description: str
    score: float | None = None


def selected_checkpoint(trainer: pl.Trainer, selection: str) -> SelectedCheckpoint | None:
    """The checkpoint ``selection`` picks among the trainer's checkpoint callbacks: ``last``,
    ``LastCheckpoint``'s file (the final weights); ``val``, ``ModelCheckpoint``'s best epoch
    on VAL. None when the rule's callback saved nothing (no validation ran, fast_dev_run)."""
    if selection == "val":
        return _best_on_val(trainer)
    if selection == "last":
        return _last_epoch(trainer)
    raise ValueError(f"selection must be 'last' or 'val', not {selection!r}")


def _last_epoch(trainer: pl.Trainer) -> SelectedCheckpoint | None:
    saver = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    if saver is None or not os.path.isfile(saver.last_model_path):
        return None
    path = saver.last_model_path
    return SelectedCheckpoint(path, f"last epoch (epoch {saved_epoch(path)})")


def _best_on_val(trainer: pl.Trainer) -> SelectedCheckpoint | None:
    saver = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if saver is None or not saver.best_model_path or saver.best_model_score is None:
        return None
    path = saver.best_model_path
    epoch = saved_epoch(path)
    description = f"best VAL hazy mAP (epoch {epoch} of {max(epoch, trainer.current_epoch)})"
    return SelectedCheckpoint(path, description, float(saver.best_model_score))


def saved_epoch(path: str | os.PathLike[str]) -> int:
    """The epoch a checkpoint was saved in, counted from 1 (read without loading tensors)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(checkpoint["epoch"]) + 1
