"""Training on several processes: learning-rate scaling with the world size, and a real
``rvsl-train trainer=ddp_cpu trainer.devices=2`` run (gloo, two CPU processes).

That DDP validation mAP equals the single-process one on the same set is proven at the metric
level by ``test_metrics_retrieval.py::test_metric_gathers_every_process_shard_under_ddp`` (each
process updates with its shard; the gathered result equals the whole-set computation).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import subprocess
import sys

import pytest
import torch

from rvsl.models.rvsl_net import RVSLNet
from rvsl.training.module import RVSLModule
from rvsl.training.optim import scaled_lr

MAIN_LR, DISC_LR = 1e-4, 2e-4  # conf/model/rvsl.yaml


@pytest.mark.parametrize(
    ("world_size", "rule", "factor"),
    [
        (4, "none", 1.0),
        (4, "linear", 4.0),
        (4, "sqrt", 2.0),
        (1, "linear", 1.0),
        (2, "sqrt", 2**0.5),
    ],
)
def test_scaled_lr_multiplies_by_the_rule_of_the_world_size(world_size, rule, factor):
    assert math.isclose(scaled_lr(1e-4, world_size, rule), 1e-4 * factor)


def test_an_unknown_lr_scaling_is_a_clear_error():
    with pytest.raises(ValueError, match=r"lr_scaling must be one of .*'none'.*not 'square'"):
        scaled_lr(1e-4, 2, "square")
    with pytest.raises(ValueError, match="lr_scaling must be one of"):
        RVSLModule(_tiny_net(), lr_scaling="quadratic")


def _tiny_net() -> RVSLNet:
    return RVSLNet("resnet18_ibn_a", num_classes=3, generator_width=8)


def _adam(lr: float):
    return lambda params: torch.optim.Adam(params, lr=lr)


def _warmup(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.01 if epoch == 0 else 1.0)


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_configure_optimizers_scales_every_optimizer_before_its_schedule(
    rule, factor, monkeypatch, caplog
):
    module = RVSLModule(
        _tiny_net(),
        stage="syn_haze",
        optimizer=_adam(MAIN_LR),
        disc_optimizer=_adam(DISC_LR),
        scheduler=_warmup,
        disc_scheduler=_warmup,
        lr_scaling=rule,
    )
    monkeypatch.setattr(RVSLModule, "_world_size", lambda self: 4)
    with caplog.at_level(logging.INFO, logger="rvsl.training.module"):
        configs = module.configure_optimizers()
    assert len(configs) == 3  # main + both discriminators (stage 2)
    for config, base in zip(configs, (MAIN_LR, DISC_LR, DISC_LR), strict=True):
        scheduler = config["lr_scheduler"]["scheduler"]
        assert scheduler.base_lrs == pytest.approx([base * factor])  # the schedule's start
        for group in config["optimizer"].param_groups:
            assert group["initial_lr"] == pytest.approx(base * factor)
            assert group["lr"] == pytest.approx(base * factor * 0.01)  # warmup of the scaled lr
    assert f"lr x{factor:g} ({rule}, world size 4)" in caplog.text


def test_without_a_trainer_the_world_size_is_one():
    module = RVSLModule(_tiny_net(), stage="syn_haze", lr_scaling="linear")
    assert module._world_size() == 1
    configs = module.configure_optimizers()
    assert configs[0]["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-4)  # default_adam


@pytest.mark.slow
def test_a_two_process_cpu_run_trains_validates_and_writes_each_file_once(tiny_fvrid, tmp_path):
    """Stage 3 on two gloo processes, 2 batches each, then the best checkpoint's validation and
    the stage report (rank zero). Linear lr scaling doubles every optimizer's lr."""
    from conftest import TINY_OVERRIDES

    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "rvsl.cli.train",
        *TINY_OVERRIDES,
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "stage=real_haze",
        "model.lr_scaling=linear",
        f"data.root={tiny_fvrid}",
        f"hydra.run.dir={run_dir}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "recommended to use `self.log(" not in output  # training logs average every rank

    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["last.ckpt"]  # selection=last: one file, no duplicate, no temp file
    assert output.count("lr x2 (linear, world size 2)") == 1  # rank zero only

    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    initial = [[g["initial_lr"] for g in opt["param_groups"]] for opt in last["optimizer_states"]]
    assert initial == [[pytest.approx(2 * MAIN_LR)], [pytest.approx(2 * DISC_LR)]]

    with open(run_dir / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    maps = [float(r["val/REAL_FOGGY/hazy/mAP"]) for r in rows if r.get("val/REAL_FOGGY/hazy/mAP")]
    assert len(maps) == 2  # the epoch's validation, then the best checkpoint's
    assert all(0.0 <= m <= 1.0 for m in maps)

    pictures = sorted(p.name for p in (run_dir / "pictures").iterdir())
    assert pictures == ["dehazing_SYN.png", "rank_list_REAL_FOGGY.png"]
    logged = sorted(p.name for p in (run_dir / "csv" / "pictures").iterdir())
    assert sum(name.startswith("pictures_best_") for name in logged) == 2  # the report, once
