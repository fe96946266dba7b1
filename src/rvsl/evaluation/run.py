"""The evaluation run behind ``rvsl-eval``: check the configuration, load the checkpoint and the
test sets, evaluate, write ``results.json`` and ``results.md`` into the run folder.

Library code: it prints nothing and returns what it wrote (:class:`EvaluationRun`); the
command line (:mod:`rvsl.cli.eval`) prints the table and turns the errors a user can fix
(:data:`USER_ERRORS`) into one line.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rvsl.data.check import evaluation_folders, require_valid_dataset
from rvsl.data.datamodule import RVSLDataModule
from rvsl.data.fvrid import FINAL_ONLY_TEST_SETS, TEST_SETS
from rvsl.evaluation.evaluate import EvalOptions, evaluate, log_results, results_table
from rvsl.evaluation.features import EvaluationError
from rvsl.inference import Reidentifier
from rvsl.inference.engine import predict_trainer
from rvsl.models.checkpoint import CheckpointError
from rvsl.models.image_size import image_size_problem
from rvsl.utils.config import RunConfigError, instantiate_group
from rvsl.utils.files import DiskFullError, atomic_write
from rvsl.utils.run_folder import claim_features_file

log = logging.getLogger(__name__)
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
SHARDS = ".shards"  # the ranks' features of a multi-device run, until rank 0 merges them
#: What a user can fix (a setting, a checkpoint, a test set, disk space), each said in one
#: sentence; anything else is a bug and keeps its traceback.
USER_ERRORS = (RunConfigError, CheckpointError, EvaluationError, DiskFullError)


@dataclass(frozen=True)
class EvaluationRun:
    """What a run produced: ``results`` (as in ``results.json``: the checkpoint, then
    :func:`rvsl.evaluation.evaluate.evaluate`'s results, metrics as fractions in [0, 1]),
    ``table`` (``results.md``'s Markdown table, in percent) and the run ``folder``."""

    results: dict[str, Any]
    table: str
    folder: Path

    @property
    def results_file(self) -> Path:
        return self.folder / RESULTS_JSON


def parse_test_set(choice: str) -> list[str]:
    """``all`` (FVRID's three) or one name (any case), optional ones such as REAL_HELDOUT
    included -> test set names; an unknown name is an error."""
    if str(choice).lower() == "all":
        return list(TEST_SETS)
    name = str(choice).upper()
    known = [*TEST_SETS, *FINAL_ONLY_TEST_SETS]
    if name not in known:
        raise RunConfigError(
            f"test_set={choice}: unknown test set; expected one of {', '.join(known)} or all"
        )
    return [name]


def pick_device(choice: str) -> torch.device:
    """``auto`` (the GPU when there is one), or a torch device name that must exist here."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunConfigError(f"device={choice}: CUDA is not available on this machine")
    return device


def prepare_data(cfg: DictConfig, names: list[str]) -> RVSLDataModule:
    """The datamodule of ``names`` with its test folders checked: bad data fails here."""
    try:
        final = [n for n in names if n in FINAL_ONLY_TEST_SETS]  # optional sets, e.g. held-out
        datamodule: RVSLDataModule = hydra.utils.instantiate(
            cfg.data, test_sets=[n for n in names if n not in final], final_test_sets=final
        )
        require_valid_dataset(datamodule.root, folders=evaluation_folders(names), fast=True)
        datamodule.add_final_test_sets()
        datamodule.setup("test")
    except hydra.errors.InstantiationException as err:
        raise RunConfigError(f"data: {err.__cause__ or err}") from err
    except (FileNotFoundError, ValueError) as err:
        raise RunConfigError(f"data.root={cfg.data.root}: {err}") from err
    return datamodule


def run(cfg: DictConfig) -> EvaluationRun | None:
    """Load, evaluate, write ``results.json`` / ``results.md`` (atomically) into the run folder
    ``cfg.paths.output_dir``, and send the metrics and pictures to ``cfg.logger``. With
    ``devices=N`` (> 1) Lightning starts N processes that embed a share each; only rank 0
    writes, and the others return None."""
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise RunConfigError(
            "checkpoint= is required: the file to evaluate, e.g. rvsl-eval "
            "checkpoint=outputs/train/runs/<run>/checkpoints/last.ckpt"
        )
    problem = image_size_problem(cfg.data.image_size)
    if problem:
        raise RunConfigError(problem)
    checkpoint = Path(cfg.checkpoint)
    if not checkpoint.is_file():
        raise RunConfigError(f"checkpoint={cfg.checkpoint}: no such file")
    main_rank = rank_zero_only.rank == 0  # the others only embed (devices > 1)
    if cfg.get("export_features") and main_rank:
        claim_features_file(cfg.export_features)  # before the work, not after it
    options = EvalOptions(**OmegaConf.to_container(cfg.eval, resolve=True))
    device = pick_device(cfg.device)
    names = parse_test_set(cfg.test_set)
    datamodule = prepare_data(cfg, names)
    reidentifier = Reidentifier.from_checkpoint(checkpoint, device=device)
    trained_at = reidentifier.trained_image_size
    if trained_at is not None and trained_at != tuple(datamodule.image_size):
        log.warning(
            "the checkpoint was trained at %s but data.image_size is %s; evaluating at %s",
            trained_at,
            datamodule.image_size,
            datamodule.image_size,
        )
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    devices = int(cfg.get("devices", 1))
    if devices < 1:
        raise RunConfigError(f"devices={devices}: must be at least 1")
    trainer = None
    if devices > 1:  # DDP through Lightning: every rank runs this, rank 0 writes
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        trainer = predict_trainer(accelerator, devices, enable_progress_bar=False)
    results = evaluate(
        reidentifier.net,
        datamodule,
        options,
        device,
        out_dir=out_dir if cfg.pictures else None,
        num_picture_queries=cfg.num_picture_queries,
        export_features=cfg.export_features,
        trainer=trainer,
        shard_dir=out_dir / SHARDS,
    )
    if results is None:  # a helper rank
        return None
    shutil.rmtree(out_dir / SHARDS, ignore_errors=True)
    results = {"checkpoint": str(checkpoint.resolve()), **results}
    table = results_table(results)
    _write_text(out_dir / RESULTS_JSON, json.dumps(results, indent=2))
    _write_text(out_dir / RESULTS_MD, f"# rvsl-eval {checkpoint.name}\n\n{table}\n")
    log_results(instantiate_group(cfg.get("logger")), results)
    return EvaluationRun(results, table, out_dir)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))
