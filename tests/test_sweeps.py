"""Sweeps: ``rvsl-train -m`` with the basic launcher, the Optuna search, the Slurm launcher.

The runs start ``python -m rvsl.cli.train -m`` as real subprocesses of tiny jobs (one training
batch each) on the tiny FVRID tree; the Slurm launcher is only composed, never submitted.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf

TIMEOUT = 300
MAP = "val/SYN/hazy/mAP"
VAL_MAP = "val/VAL/hazy/mAP"  # what rvsl-train returns to a search: never a test set's
ONE_BATCH = ["trainer.limit_train_batches=1", "data.test_sets=[SYN]", "test_after_fit=false"]


def _sweep(tiny_fvrid: Path, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``rvsl-train -m`` on tiny jobs, everything under ``tmp_path``."""
    from conftest import TINY_OVERRIDES

    env = dict(os.environ, OMP_NUM_THREADS="2", RVSL_LOG_DIR=str(tmp_path / "logs"))
    env.pop("HYDRA_FULL_ERROR", None)  # what a user sees by default
    command = [sys.executable, "-m", "rvsl.cli.train", "-m", *TINY_OVERRIDES]
    command += [f"data.root={tiny_fvrid}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def _jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: p.name)


def _csv_column(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


def test_a_basic_sweep_runs_each_job_in_its_own_folder_with_its_own_weight(tiny_fvrid, tmp_path):
    result = _sweep(tiny_fvrid, tmp_path, "stage=baseline", "loss.reid=0.5,1.0", *ONE_BATCH)
    assert result.returncode == 0, result.stderr[-4000:]
    sweep = tmp_path / "sweep"
    jobs = _jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    assert not (tmp_path / "logs").exists()  # nothing written beside the sweep folder
    losses, checkpoints = [], set()
    for job, weight in zip(jobs, (0.5, 1.0), strict=True):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert f"loss.reid={weight}" in overrides
        assert OmegaConf.load(job / ".hydra" / "config.yaml").loss.reid == weight
        assert len(_csv_column(job, MAP)) == 1  # its own metrics.csv, one validation
        selected = job / "checkpoints" / "last.ckpt"  # selection=last: the final weights
        hparams = torch.load(selected, map_location="cpu", weights_only=True)["hyper_parameters"]
        assert hparams["loss"] == {"reid": weight}
        checkpoints.add(selected)
        losses.append(_csv_column(job, "train/loss_epoch")[0])
    assert len(checkpoints) == 2
    # same seed, same first batch, and the baseline's loss is reid x its weight
    assert losses[0] == pytest.approx(0.5 * losses[1], rel=1e-4)


def test_a_sweep_over_a_key_that_does_not_exist_stops_before_any_job(tiny_fvrid, tmp_path):
    result = _sweep(tiny_fvrid, tmp_path, "stage=baseline", "loss.nonexistent=1,2")
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == "Could not override 'loss.nonexistent'."
    assert "Traceback" not in result.stderr + result.stdout
    assert "Launching" not in result.stderr + result.stdout
    sweep = tmp_path / "sweep"  # the basic sweeper writes multirun.yaml, then checks the jobs
    assert not sweep.exists() or _jobs(sweep) == []


def test_rvsl_train_returns_a_float_even_without_a_val_score(compose_train):
    from rvsl.cli.train import main

    cfg = compose_train("stage=baseline", "trainer.limit_val_batches=0", *ONE_BATCH)
    value = main(cfg)  # hydra.main runs the task function on a given config
    assert type(value) is float and value == 0.0  # no validation: nothing to maximise


@pytest.mark.filterwarnings("ignore::DeprecationWarning:optuna")  # optuna 2.10 on SQLAlchemy 2
@pytest.mark.parametrize("stage", ["syn_haze", "real_clear", "real_haze"])
def test_the_optuna_search_composes_and_searches_keys_the_stage_has(compose_train, stage):
    cfg = compose_train("hparams_search=optuna", f"stage={stage}", "data.val_identities=2")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert get_class(sweeper._target_).__name__ == "OptunaSweeper"
    assert get_class(sweeper.sampler._target_).__name__ == "TPESampler"
    assert sweeper.direction == "maximize" and sweeper.sampler.seed == cfg.seed
    assert cfg.optimized_metric == cfg.callbacks.model_checkpoint.monitor == "val/VAL/hazy/mAP"
    assert len(sweeper.params) >= 3
    parser = OverridesParser.create()
    for key, space in sweeper.params.items():
        assert isinstance(OmegaConf.select(cfg, key), float | int), key
        (override,) = parser.parse_overrides([f"{key}={space}"])
        assert override.is_sweep_override(), (key, space)


def test_an_optuna_search_runs_its_trials_and_records_the_best(tiny_fvrid, tmp_path):
    result = _sweep(
        tiny_fvrid,
        tmp_path,
        "hparams_search=optuna",
        "data.val_identities=2",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "stage=syn_haze",
        "model.net.generator_width=8",
        "~callbacks.dehazing_panel",
        *ONE_BATCH,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Failed experiment" not in output  # every trial gave optuna a float
    sweep = tmp_path / "sweep"
    jobs = _jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    params = set(OmegaConf.load(jobs[0] / ".hydra" / "hydra.yaml").hydra.sweeper.params)
    assert set(results["best_params"]) == params
    scores = []
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert {o.split("=", 1)[0] for o in overrides} >= params  # the trial's own values
        scores.append(_csv_column(job, VAL_MAP)[-1])
    assert isinstance(results["best_value"], float)
    assert results["best_value"] == pytest.approx(max(scores))


def test_the_slurm_launcher_composes_one_task_per_gpu(compose_train):
    cfg = compose_train("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4")
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert launcher.nodes == 1 and launcher.partition is None and launcher.timeout_min > 0
    assert launcher.submitit_folder.startswith(cfg.hydra.sweep.dir)
    two_nodes = compose_train("hydra/launcher=slurm", "trainer=ddp", "+trainer.num_nodes=2")
    assert two_nodes.hydra.launcher.nodes == 2
