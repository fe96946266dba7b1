"""``rvsl-eval checkpoint=PATH [data=fvrid data.root=PATH] [test_set=...] [eval.*=...]``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rvsl.data.check import evaluation_folders, require_valid_dataset
from rvsl.data.datamodule import RVSLDataModule
from rvsl.data.fvrid import FINAL_ONLY_TEST_SETS, TEST_SETS
from rvsl.evaluation.evaluate import (
    EvalOptions,
    EvaluationError,
    evaluate,
    log_results,
    results_table,
)
from rvsl.inference import Reidentifier
from rvsl.models.checkpoint import CheckpointError
from rvsl.models.image_size import image_size_problem
from rvsl.utils.config import RunConfigError, instantiate_group
from rvsl.utils.files import DiskFullError
from rvsl.utils.run_folder import claim_features_file, claim_run_folder

log = logging.getLogger("rvsl-eval")


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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load, evaluate, write ``results.json`` / ``results.md`` into the run folder."""
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
    if cfg.get("export_features"):
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
    results = evaluate(
        reidentifier.net,
        datamodule,
        options,
        device,
        out_dir=out_dir if cfg.pictures else None,
        num_picture_queries=cfg.num_picture_queries,
        export_features=cfg.export_features,
    )
    results = {"checkpoint": str(checkpoint.resolve()), **results}
    table = results_table(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "results.md").write_text(f"# rvsl-eval {checkpoint.name}\n\n{table}\n")
    log_results(instantiate_group(cfg.get("logger")), results)
    print(table)
    print(f"\nresults: {out_dir / 'results.json'}")
    return results


@hydra.main(version_base="1.3", config_path="pkg://rvsl.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        own_log = f"{HydraConfig.get().job.name}.log"
        claim_run_folder(cfg.paths.output_dir, "rvsl-eval", own=(own_log,))
        run(cfg)
    except (RunConfigError, CheckpointError, EvaluationError, DiskFullError) as err:
        log.error("rvsl-eval: %s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
