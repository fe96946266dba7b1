"""Build everything a run needs from a composed config, train, and report the metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint

from rvsl.data.check import DatasetError, require_valid_dataset, required_folders
from rvsl.evaluation.stage_pictures import stage_pictures
from rvsl.metrics.restoration import check_restoration
from rvsl.models.pretrained import IBN_RELEASE_FILES
from rvsl.models.start_weights import SCRATCH
from rvsl.training.checkpointing import SelectedCheckpoint, keep_csv_history, selected_checkpoint
from rvsl.training.preflight import (
    SELECTION_METRIC,
    RunConfigError,
    check_resume_checkpoint,
    check_settings,
    run_overrides,
    same_run,
    warn_about_data,
)
from rvsl.training.requeue import requeue_on_signal, resume_on_restart
from rvsl.training.speed import apply_host_settings, resolve_model_options, runs_on_gpu
from rvsl.utils.config import instantiate_group
from rvsl.utils.files import naming_last_good_checkpoint

log = logging.getLogger(__name__)
LAST_CKPT = Path("checkpoints") / "last.ckpt"  # in a run folder; LastCheckpoint writes it
DEMO_DATA = "rvsl.data.demo.demo_datamodule"  # the generated world trains from scratch


def build_callbacks(cfg: DictConfig) -> list[Any]:
    """The callbacks group for this run's ``selection``: with ``last`` no ``ModelCheckpoint``
    (the selected weights are ``last.ckpt``, ``LastCheckpoint``'s); with ``val`` it keeps the
    best epoch on VAL."""
    callbacks = instantiate_group(cfg.get("callbacks"))
    if cfg.get("selection", "last") == "last":
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    return callbacks


def resolve_ckpt_path(
    ckpt_path: str | None,
    output_dir: str,
    overrides: Sequence[str] = (),
    task: str | None = None,
) -> str | None:
    """The checkpoint to resume from; a missing one is an error that says where it looked.

    ``last``: this run folder's ``checkpoints/last.ckpt`` (the resumed command must reuse the
    interrupted run's folder: ``hydra.run.dir=OLD_RUN``); a folder: that run folder's
    ``checkpoints/last.ckpt`` (training then continues in the new run folder); else a file.
    ``overrides`` and ``task`` (this run's) pick the run folder the error suggests.
    """
    if ckpt_path is None:
        return None
    if str(ckpt_path) == "last":
        path = Path(output_dir) / LAST_CKPT
        if not path.is_file():
            raise RunConfigError(_no_last_checkpoint(path, Path(output_dir), overrides, task))
        return str(path)
    path = Path(ckpt_path)
    if path.is_dir():  # a run folder
        folder, path = path, path / LAST_CKPT
        if not path.is_file():
            raise RunConfigError(f"ckpt_path={ckpt_path}: no checkpoint at {path}")
        if folder.resolve() != Path(output_dir).resolve():
            log.warning(
                "resuming %s in a new run folder %s: selection=val's best epoch is tracked "
                "afresh there; to continue in the old folder run with ckpt_path=last "
                "hydra.run.dir=%s",
                path,
                output_dir,
                folder,
            )
        return str(path)
    if not path.is_file():
        raise RunConfigError(f"ckpt_path={ckpt_path}: no checkpoint at {path}")
    return str(path)


def _no_last_checkpoint(
    path: Path, output_dir: Path, overrides: Sequence[str], task: str | None
) -> str:
    """Where ``ckpt_path=last`` looked, how to point it at the interrupted run, and the newest
    run folder beside this one that has a ``last.ckpt`` and was started with the same
    overrides for the same task."""
    message = (
        f"ckpt_path=last: no checkpoint at {path}. A resumed run must reuse the interrupted "
        "run's folder (every new run gets a new timestamped one): add "
        "hydra.run.dir=<the old run folder>, or pass ckpt_path=<the old run folder>"
    )
    siblings = [
        d / LAST_CKPT
        for d in (output_dir.parent.iterdir() if output_dir.parent.is_dir() else [])
        if d != output_dir and (d / LAST_CKPT).is_file() and same_run(d, overrides, task)
    ]
    if siblings:
        newest = max(siblings, key=lambda p: p.stat().st_mtime).parent.parent
        message += f". The newest one here: hydra.run.dir={newest}"
    return message


def prepare_data(cfg: DictConfig) -> pl.LightningDataModule:
    """The datamodule with its folders parsed: bad data settings fail here, before training.

    The fast dataset check runs first (a missing final test set is named before it). Layout
    problems and unreadable test images are fatal; unreadable training images too when
    ``data.strict`` is true, else one warning lists them and the training datasets skip them.
    """
    try:
        datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data)
        datamodule.require_final_test_sets()
        strict = bool(getattr(datamodule, "strict", True))
        train_folders = required_folders(datamodule.train_stage, test_sets=())
        test_sets = [*datamodule.test_set_names, *datamodule.final_test_set_names]
        folders = required_folders(datamodule.train_stage, test_sets)
        report = require_valid_dataset(
            datamodule.root,
            folders=folders,
            fast=True,
            tolerate_unreadable=() if strict else train_folders,
        )
        datamodule.setup("fit")
    except hydra.errors.InstantiationException as err:
        raise RunConfigError(f"data: {err.__cause__ or err}") from err
    except DatasetError as err:
        hint = ""
        if strict and err.report is not None and err.report.unreadable_in(train_folders):
            hint = "\ndata.strict=false would skip the unreadable training images with a warning"
        raise RunConfigError(f"data.root={cfg.data.root}: {err}{hint}") from err
    except (FileNotFoundError, ValueError) as err:
        raise RunConfigError(f"data.root={cfg.data.root}: {err}") from err
    skipped = report.unreadable_in(train_folders)
    if skipped:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.warning(
            "%d unreadable training image(s) will be skipped (data.strict=false): %s%s",
            len(skipped),
            ", ".join(str(p) for p in skipped[:5]),
            more,
        )
    return datamodule


def refuse_local_ddp_sweep(trainer_cfg: DictConfig) -> None:
    """A multi-process DDP run inside a locally launched sweep cannot work: Lightning starts
    its worker processes by re-running the command line, ``-m`` and all."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    launcher = str(OmegaConf.select(hydra_cfg, "launcher._target_", default=""))
    devices = trainer_cfg.get("devices", 1)
    many = not isinstance(devices, int) or devices > 1 or trainer_cfg.get("num_nodes", 1) > 1
    if hydra_cfg.mode == RunMode.MULTIRUN and "BasicLauncher" in launcher and many:
        raise RunConfigError(
            f"trainer.devices={devices} in a local sweep: Lightning would re-run the whole sweep "
            "in every DDP worker; sweep with trainer.devices=1 locally, or use "
            "hydra/launcher=slurm"
        )


def check_scale(trainer_cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """Devices that exist, and enough identities for P per batch on every process: checked
    here, before processes start, because inside them the error would come once per rank."""
    devices, nodes = trainer_cfg.get("devices", 1), int(trainer_cfg.get("num_nodes", 1) or 1)
    accelerator = str(trainer_cfg.get("accelerator", "cpu"))
    strategy = trainer_cfg.get("strategy")
    distributed = "DDP" in str(OmegaConf.select(trainer_cfg, "strategy._target_", default=""))
    distributed |= isinstance(strategy, str) and strategy.startswith("ddp")
    if trainer_cfg.get("sync_batchnorm", False) and accelerator == "cpu" and distributed:
        raise RunConfigError(
            "trainer.sync_batchnorm=true needs GPUs: PyTorch's SyncBatchNorm cannot synchronise "
            "CPU processes; set trainer.sync_batchnorm=false for trainer=ddp_cpu"
        )
    if not isinstance(devices, int):
        return  # "auto", -1 or a list of ids: Lightning resolves and checks those
    if accelerator in ("gpu", "cuda") and devices > torch.cuda.device_count():
        raise RunConfigError(
            f"trainer.devices={devices} asks for {devices} GPUs, but this machine has "
            f"{torch.cuda.device_count()}"
        )
    world = devices * nodes
    identities = datamodule.num_classes
    per_process = getattr(datamodule, "ids_per_batch", 1)
    if identities < per_process * world:
        raise RunConfigError(
            f"data.batch_size={datamodule.batch_size} is P={per_process} identities x "
            f"K={datamodule.num_instances} per process; with {world} processes a step needs "
            f"{per_process * world} distinct identities, but the training set has {identities}: "
            "lower data.batch_size or trainer.devices"
        )


def check_initialisation(cfg: DictConfig) -> None:
    """A run on real data starts from ImageNet weights, as the paper does, unless it says
    ``model.pretrained=scratch``; a weights file that does not exist is named before any work.

    Runs that take their weights from ``init_from`` or resume from ``ckpt_path`` overwrite the
    initialisation anyway, and the generated demo world has no ImageNet counterpart.
    """
    pretrained = cfg.model.get("pretrained")
    if pretrained is None:
        started = cfg.model.get("init_from") or cfg.get("init_from") or cfg.get("ckpt_path")
        if started or cfg.data.get("_target_") == DEMO_DATA:
            return
        backbone = str(cfg.model.net.backbone)
        release = IBN_RELEASE_FILES.get(backbone, f"{backbone}-*.pth")
        depth = backbone.split("_")[0].replace("resnet", "ResNet-")
        raise RunConfigError(
            f"model.pretrained is not set: training on data.root={cfg.data.root} starts from "
            f"ImageNet weights in a local file (nothing is downloaded): pass "
            f"model.pretrained=/path/to/{release} (the IBN-Net release) or a torchvision "
            f"{depth} file, or model.pretrained={SCRATCH} to train from random weights"
        )
    if str(pretrained) != SCRATCH and not Path(str(pretrained)).is_file():
        raise RunConfigError(
            f"model.pretrained={pretrained}: no such file (ImageNet weights are read from a local "
            f"file, never downloaded; model.pretrained={SCRATCH} trains from random weights)"
        )


def resolve_precision(trainer_cfg: DictConfig) -> str:
    """The precision for the device the run will use.

    ``auto``: bf16-mixed on GPUs with bfloat16 (A100, H100), 16-mixed on older GPUs (V100),
    32-true on CPUs. ``16-mixed`` on a CPU (recipe=paper smoke-tested on a laptop) becomes
    32-true with a warning: CPUs have no fast float16 autocast. Other values are kept as given.
    """
    precision = str(trainer_cfg.get("precision", "32-true"))
    on_gpu = runs_on_gpu(trainer_cfg)
    if precision == "auto":
        if on_gpu:
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "32-true"
    if precision == "16-mixed" and not on_gpu:
        log.warning("trainer.precision=16-mixed needs a GPU; this CPU run uses 32-true")
        return "32-true"
    return precision


def build_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> pl.Trainer:
    """The ``pytorch_lightning.Trainer`` of a trainer config, its precision resolved for the
    device first (see :func:`resolve_precision`); ``kwargs`` go to the Trainer."""
    with open_dict(trainer_cfg):
        trainer_cfg.precision = resolve_precision(trainer_cfg)
    return hydra.utils.instantiate(trainer_cfg, **kwargs)


def checkpoint_folders(cfg: DictConfig) -> list[Path]:
    """Where this run writes checkpoints (the checkpoint callbacks' ``dirpath``)."""
    keys = ("callbacks.model_checkpoint.dirpath", "callbacks.last_checkpoint.dirpath")
    found = {str(OmegaConf.select(cfg, key, default="") or "") for key in keys} - {""}
    return sorted(Path(f) for f in found) or [Path(cfg.paths.output_dir) / LAST_CKPT.parent]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit one stage as configured; returns the logged metrics (``val/...``, ``train/...``)
    and, when the ``selection`` rule found a checkpoint:

    * ``selected_model_path``: the checkpoint it picked (``best_model_path`` too, the older
      name), and ``selection``: which epoch and why, e.g. "last epoch (epoch 12)";
    * ``best_model_score``: the selected weights' hazy mAP on VAL (:data:`SELECTION_METRIC`,
      what a sweep maximises), absent without a validation split;
    * ``best``: with ``test_after_fit``, the selected weights' metrics on the val sets and the
      final test sets, plus the stage report's.

    A full disk ends it with ``DiskFullError`` naming the file and the last good checkpoint.
    """
    with naming_last_good_checkpoint(checkpoint_folders(cfg)):
        return _train(cfg)


def build_model(cfg: DictConfig, num_classes: int, **overrides: Any) -> pl.LightningModule:
    """The LightningModule of ``cfg.model``, its network sized for ``num_classes`` training
    identities (the data decides it; the config is not written back), its ``auto`` speed
    options chosen for the run's device (:func:`rvsl.training.speed.device_defaults`),
    ``overrides`` on top."""
    try:
        speed = resolve_model_options(cfg.model, runs_on_gpu(cfg.trainer))
        overrides = speed | overrides
        return hydra.utils.instantiate(cfg.model, net={"num_classes": num_classes}, **overrides)
    except hydra.errors.InstantiationException as err:
        raise RunConfigError(f"model: {err.__cause__ or err}") from err


def _train(cfg: DictConfig) -> dict[str, Any]:
    """:func:`train` itself: every check first, then the fit and the stage report."""
    apply_host_settings(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    refuse_local_ddp_sweep(cfg.trainer)
    check_settings(cfg)
    check_initialisation(cfg)
    try:
        check_restoration(cfg.get("restoration_metrics", "standard"), "restoration_metrics")
    except ValueError as err:
        raise RunConfigError(str(err)) from None
    datamodule = prepare_data(cfg)
    check_scale(cfg.trainer, datamodule)
    warn_about_data(cfg, datamodule)
    ckpt_path = resume_on_restart(cfg.get("ckpt_path"), Path(cfg.paths.output_dir) / LAST_CKPT)
    ckpt_path = resolve_ckpt_path(
        ckpt_path, cfg.paths.output_dir, run_overrides(), cfg.get("task_name")
    )
    model = build_model(cfg, datamodule.num_classes)
    if ckpt_path is not None:
        check_resume_checkpoint(ckpt_path, model)
    trainer = build_trainer(
        cfg.trainer,
        callbacks=build_callbacks(cfg),
        logger=instantiate_group(cfg.get("logger")) or False,
    )
    if ckpt_path is not None:
        keep_csv_history(trainer.loggers)
    run_config = {
        k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else v
        for k, v in cfg.items()
        if k != "hydra"
    }
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config)
    # weights_only: a resumed checkpoint is an external file too; ours hold only plain data
    with requeue_on_signal():  # Slurm's time-limit warning: save last.ckpt, requeue
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    selected = selected_checkpoint(trainer, cfg.get("selection", "last"))
    if selected is None:
        return metrics
    log.info("selected checkpoint: %s, the %s", selected.path, selected.description)
    metrics |= {
        "selected_model_path": selected.path,
        "best_model_path": selected.path,
        "selection": selected.description,
    }
    if cfg.get("test_after_fit"):
        metrics["best"] = evaluate_selected(cfg, trainer, model, datamodule, selected)
    score = selection_score(selected, metrics)
    if score is not None:
        metrics["best_model_score"] = score
    return metrics


def selection_score(selected: SelectedCheckpoint, metrics: dict[str, Any]) -> float | None:
    """The selected weights' VAL hazy mAP: the rule's own reading (``val``), else the
    evaluation after fitting, else the last validation's (the last epoch's, for ``last``)."""
    if selected.score is not None:
        return selected.score
    value = metrics.get("best", {}).get(SELECTION_METRIC, metrics.get(SELECTION_METRIC))
    return None if value is None else float(value)


def evaluate_selected(
    cfg: DictConfig,
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    selected: SelectedCheckpoint,
) -> dict[str, float]:
    """Metrics of the selected checkpoint on the val sets and ``data.final_test_sets`` (only
    evaluated here), plus the stage report (dehazing quality, pictures) of its weights."""
    datamodule.add_final_test_sets()
    results = trainer.validate(
        model, datamodule=datamodule, ckpt_path=selected.path, verbose=False, weights_only=True
    )
    metrics = {k: float(v) for r in results for k, v in r.items()}
    if trainer.is_global_zero:  # pictures are written once
        metrics |= stage_pictures(
            model.net,
            datamodule,
            cfg.paths.output_dir,
            device=model.device,
            dehazing=model.stage != "baseline",
            loggers=trainer.loggers,
            step=trainer.global_step,
            restoration=cfg.get("restoration_metrics", "standard"),
        )
        for logger in trainer.loggers:  # validate closed them: write the report's pictures
            logger.finalize("success")
    return metrics
