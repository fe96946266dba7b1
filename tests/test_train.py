"""rvsl-train end to end: the real Hydra configs, shrunk to seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict

from rvsl.engine.train import train
from rvsl.models import load_net

TEST_SETS = ("SYN", "REAL_CLEAR", "REAL_FOGGY")


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone() for k, v in module.state_dict().items() if v.dtype.is_floating_point
    }


def _changed(before: dict, module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(v, after[k]) for k, v in before.items())


def test_stage1_trains_and_validates_both_branches_on_every_test_set(compose_train):
    cfg = compose_train("stage=syn_haze")
    metrics = train(cfg)
    for name in TEST_SETS:
        for branch in ("clear", "hazy"):
            for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
                assert 0.0 <= metrics[f"val/{name}/{branch}/{key}"] <= 1.0
    for term in ("ce_clear", "triplet_hazy", "p2p_clear", "ea", "adv", "acc"):
        assert f"train/syn/{term}_epoch" in metrics
    assert "train/disc_clear/loss_epoch" in metrics and "train/disc_hazy/loss_epoch" in metrics
    run = Path(cfg.paths.output_dir)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "csv" / "metrics.csv").is_file()


def test_checkpoints_load_safely_and_rebuild_the_network(compose_train):
    cfg = compose_train()
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["rvsl"]["stage"] == "syn_haze"
    net = load_net(last)
    assert net.backbone == "resnet18_ibn_a" and net.num_classes == 6


@pytest.mark.parametrize(
    ("stage", "stepped", "idle"),
    [
        ("syn_haze", ["disc_clear", "disc_hazy"], []),
        ("real_clear", ["disc_clear"], ["disc_hazy"]),
        ("real_haze", ["disc_hazy"], ["disc_clear"]),
    ],
)
def test_each_stage_steps_the_main_optimizer_and_only_its_own_discriminators(
    compose_train, stage, stepped, idle
):
    cfg = compose_train(
        f"stage={stage}", "+trainer.max_steps=2", "trainer.check_val_every_n_epoch=5"
    )
    with open_dict(cfg):
        cfg.model.net.num_classes = 6
    model = hydra.utils.instantiate(cfg.model)
    before = {name: _snapshot(getattr(model, name)) for name in ("net", "disc_clear", "disc_hazy")}
    datamodule = hydra.utils.instantiate(cfg.data)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step > 0
    assert len(trainer.optimizers) == 1 + len(stepped)
    assert _changed(before["net"], model.net)
    for name in stepped:
        assert _changed(before[name], getattr(model, name)), name
    for name in idle:
        assert not _changed(before[name], getattr(model, name)), name


def test_a_later_stage_starts_from_the_earlier_stages_weights(compose_train):
    first = compose_train()
    train(first)
    best = next((Path(first.paths.output_dir) / "checkpoints").glob("best-*.ckpt"))
    cfg = compose_train("stage=real_haze", f"model.init_from={best}")
    with open_dict(cfg):
        cfg.model.net.num_classes = 6
    model = hydra.utils.instantiate(cfg.model)
    saved = torch.load(best, weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        if key.startswith(("net.", "disc_")):
            torch.testing.assert_close(value, saved[key], msg=key)


def test_stage3_trains_with_bf16_mixed_precision_and_manual_optimization(compose_train):
    cfg = compose_train("stage=real_haze", "trainer.precision=bf16-mixed", "+trainer.max_steps=2")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))


def test_a_mistyped_config_key_is_rejected_with_its_name(compose_train):
    with pytest.raises(ConfigCompositionException, match=r"model\.pool_sizee"):
        compose_train("model.pool_sizee=3")


def test_a_loss_weight_the_stage_does_not_have_is_rejected_before_training(compose_train):
    cfg = compose_train("stage=real_clear", "+loss.dcp=1.0")
    with pytest.raises(Exception, match=r"\['dcp'\] do not exist in stage 'real_clear'"):
        train(cfg)


def test_rvsl_train_runs_as_a_user_types_it(tiny_fvrid, tmp_path):
    from conftest import TINY_OVERRIDES

    env = dict(os.environ, RVSL_LOG_DIR=str(tmp_path / "logs"))
    result = subprocess.run(
        [
            Path(sys.executable).with_name("rvsl-train"),
            *TINY_OVERRIDES,
            f"data.root={tiny_fvrid}",
            "stage=real_clear",
            "+trainer.max_steps=2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / ".hydra" / "config.yaml").is_file()
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()
