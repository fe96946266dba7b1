"""Checks a run makes before any work: a setting that cannot train stops it with one sentence
naming the setting (:class:`RunConfigError`); one that trains badly gets a warning."""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rvsl.data.fvrid import VAL_SET
from rvsl.models.checkpoint import CheckpointError, load_untrusted, short_list, wrong_shapes
from rvsl.models.image_size import image_size_problem
from rvsl.utils.config import RunConfigError

if TYPE_CHECKING:  # rvsl-export checks sizes without loading Lightning
    import pytorch_lightning as pl

log = logging.getLogger(__name__)
#: overrides that say where a run lives and what it resumes, not what it trains
RESUME_KEYS = ("ckpt_path=", "hydra.run.dir=")
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
#: how a stage picks the checkpoint it reports and hands on (the top-level ``selection``)
SELECTIONS = ("last", "val")
#: the only metric that may choose a model: hazy-branch mAP on held-out training identities
SELECTION_METRIC = f"val/{VAL_SET}/hazy/mAP"


# ------------------------------------------------------------------------------ settings
def _number(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def check_settings(cfg: DictConfig) -> None:
    """Settings that cannot train, checked from the config alone (before the data is read)."""
    from rvsl.training.stages import STAGES

    stage = str(cfg.model.get("stage", cfg.get("stage")))
    size = cfg.data.get("image_size")
    if size is not None:
        problem = image_size_problem(
            size, discriminators=bool(stage in STAGES and STAGES[stage].discriminators)
        )
        if problem:
            raise RunConfigError(problem)
    for key in ("model.optimizer.lr", "model.disc_optimizer.lr"):
        lr = _number(cfg, key)
        if isinstance(lr, int | float) and lr <= 0:
            raise RunConfigError(f"{key}={lr}: a learning rate must be > 0 (the paper's: 1e-4)")
    workers = _number(cfg, "data.num_workers")
    if isinstance(workers, int) and workers < 0:
        raise RunConfigError(
            f"data.num_workers={workers}: must be 0 (load in the training process) or more"
        )
    epochs, steps = _number(cfg, "trainer.max_epochs"), _number(cfg, "trainer.max_steps")
    if isinstance(epochs, int) and (epochs == 0 or epochs < -1):
        raise RunConfigError(
            f"trainer.max_epochs={epochs} trains nothing: give 1 or more (-1: no limit, then "
            "trainer.max_steps ends the run)"
        )
    if isinstance(steps, int) and (steps == 0 or steps < -1):
        raise RunConfigError(f"trainer.max_steps={steps} trains nothing: give 1 or more (-1: none)")
    if _number(cfg, "trainer.limit_train_batches") == 0:
        raise RunConfigError("trainer.limit_train_batches=0 trains nothing: leave it unset")
    check_selection(cfg)


# ------------------------------------------------------------------------------ selection
def check_selection(cfg: DictConfig) -> None:
    """Model selection that never looks at a test set: ``selection`` is ``last`` or ``val``,
    and whatever picks a model (selection=val's checkpoint monitor, an Optuna search's
    objective) reads :data:`SELECTION_METRIC`, which needs a validation split."""
    selection = cfg.get("selection", "last")
    if selection not in SELECTIONS:
        raise RunConfigError(
            f"selection={selection}: choose last (the final epoch's weights) or val (the best "
            f"epoch by {SELECTION_METRIC}, on held-out training identities)"
        )
    held_out = int(_number(cfg, "data.val_identities") or 0)
    if selection == "val" and not held_out:
        raise RunConfigError(
            f"selection=val picks the epoch with the best {SELECTION_METRIC}, on training "
            "identities held out for validation, but there are none: set data.val_identities=N "
            "(N > 0 identities, e.g. 10% of them) or use selection=last"
        )
    if selection == "val" and OmegaConf.select(cfg, "callbacks.model_checkpoint") is None:
        raise RunConfigError(
            "selection=val needs callbacks.model_checkpoint, which keeps the best epoch on VAL"
        )
    monitor = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor", default=None)
    if monitor is not None and monitor != SELECTION_METRIC:
        raise RunConfigError(
            f"callbacks.model_checkpoint.monitor={monitor}: checkpoints are chosen by "
            f"{SELECTION_METRIC} (held-out training identities) only, never by a test set"
        )
    _check_search_objective(cfg, held_out)


def _check_search_objective(cfg: DictConfig, held_out: int) -> None:
    """A hyper-parameter search (``optimized_metric`` is set) maximises the VAL metric."""
    objective = cfg.get("optimized_metric")
    if objective is None:
        return
    if objective != SELECTION_METRIC:
        raise RunConfigError(
            f"optimized_metric={objective}: a search maximises what rvsl-train returns, "
            f"{SELECTION_METRIC} on held-out training identities, never a test set"
        )
    if not held_out:
        raise RunConfigError(
            f"hparams_search=optuna maximises {SELECTION_METRIC}, the hazy mAP on training "
            "identities held out for validation, but there are none: set data.val_identities=N "
            "(N > 0 identities, e.g. 10% of them)"
        )


def warn_about_data(cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """Warnings that need the parsed data: repeated images in PK batches, truncated galleries."""
    train_set = getattr(datamodule, "syn_train", None)
    k = getattr(datamodule, "num_instances", None)
    if train_set is not None and k:
        counts = sorted(Counter(train_set.pids).values())
        short = sum(c < k for c in counts)
        if short * 2 > len(counts):
            log.warning(
                "data.num_instances=%d but %d of the %d training identities have fewer images "
                "(median %d, fewest %d): the PK sampler repeats their images to fill %d per "
                "identity, so batches hold duplicates; lower data.num_instances",
                k,
                short,
                len(counts),
                counts[len(counts) // 2],
                counts[0],
                k,
            )
    limit = _number(cfg, "trainer.limit_val_batches")
    sets = getattr(datamodule, "val_sets", None) or []
    batch = int(getattr(datamodule, "eval_batch_size", 1) or 1)
    if limit is None or not sets or limit == 0:  # 0: Lightning skips validation altogether
        return
    cut = []
    for name, dataset in zip(datamodule.val_set_names, sets, strict=False):
        total = math.ceil(len(dataset) / batch)
        kept = min(total, limit) if isinstance(limit, int) else int(total * float(limit))
        if kept < total:
            cut.append(f"{name} {min(len(dataset), kept * batch)} of {len(dataset)} images")
    if cut:
        log.warning(
            "trainer.limit_val_batches=%s validates only the first batches of each test set "
            "(queries first, then the gallery): %s; the gallery is truncated, so mAP and rank-1 "
            "are not comparable with a full evaluation",
            limit,
            ", ".join(cut),
        )


# ------------------------------------------------------------------------------ resuming
def check_resume_checkpoint(path: str, model: pl.LightningModule) -> None:
    """``ckpt_path``'s file, read through the same safe loader as ``init_from``: a training
    checkpoint of this stage whose weights fit ``model``. Lightning reads it afterwards."""
    try:
        ckpt = load_untrusted(path)
    except CheckpointError as err:
        raise CheckpointError(f"ckpt_path={err}") from None
    state = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"ckpt_path={path}: not a checkpoint of rvsl-train (no state_dict)")
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(
            f"ckpt_path={path}: holds weights but no training state to resume (optimizers, "
            f"epoch, step); to start a new run from these weights use init_from={path}"
        )
    saved = (ckpt.get("hyper_parameters") or {}).get("stage")
    stage = getattr(model, "stage", None)
    if saved is not None and stage is not None and saved != stage:
        raise CheckpointError(
            f"ckpt_path={path}: saved by a stage={saved} run, and resuming continues the same "
            f"stage; to start stage={stage} from it use init_from={path}"
        )
    own = model.state_dict()
    wrong = wrong_shapes(state, own)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        raise CheckpointError(
            f"ckpt_path={path}: its weights do not fit this run's network; wrong shapes: "
            f"{short_list(wrong, 3)}; missing: {short_list(missing, 3)}; unexpected: "
            f"{short_list(unexpected, 3)}"
        )


def run_overrides() -> list[str]:
    """This run's command-line overrides, less where it runs and what it resumes."""
    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.task if not o.startswith(RESUME_KEYS)]


def same_run(folder: Path, overrides: Sequence[str], task: str | None) -> bool:
    """Whether the run folder ``folder`` was started with ``overrides`` (order aside, resume
    keys left out) and, when ``task`` is given, for that task (its ``.hydra`` files say)."""
    try:
        theirs = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or []
        if task is not None:
            config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text()) or {}
            if config.get("task_name") != task:
                return False
    except (OSError, yaml.YAMLError, AttributeError):
        return False
    theirs = [str(o) for o in theirs if not str(o).startswith(RESUME_KEYS)]
    return sorted(theirs) == sorted(overrides)


# ------------------------------------------------------------------------------ run folder
class RunFolderCheck(Callback):
    """Hydra callback: make the run (or sweep) folder first, so that one that cannot be made
    (a file in the way, a read-only parent) stops the command with one sentence and exit code
    2 instead of Hydra's traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _make_folder(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _make_folder(config, "hydra.sweep.dir")


def _make_folder(config: DictConfig, key: str) -> None:
    if OmegaConf.get_type(config, "hydra") is HydraConf:  # a real run's config (not a test's)
        # as Hydra's run_job does before it reads the folder: ${hydra:runtime.cwd} needs it
        HydraConfig.instance().set_config(config)
    folder = Path(str(OmegaConf.select(config, key)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return
    except OSError as err:
        reason = _why_not(folder, err)
    prog = f"rvsl-{OmegaConf.select(config, 'hydra.job.name', default='train')}"
    print(
        f"{prog}: cannot create the run folder {folder} ({key}): {reason}; choose another with "
        f"{key}=... or RVSL_LOG_DIR=...",
        file=sys.stderr,
    )
    sys.exit(2)


def _why_not(folder: Path, err: OSError) -> str:
    """The first path on the way to ``folder`` that blocks it, and how."""
    for part in [*reversed(folder.parents), folder]:
        if part.exists() and not part.is_dir():
            return f"{part} is a file, not a folder"
        if not part.exists():
            parent = part.parent
            if not os.access(parent, os.W_OK | os.X_OK) or err.errno in _DENIED:
                return f"{parent} is not writable ({err.strerror})"
            break
    return err.strerror or str(err)
