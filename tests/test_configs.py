"""Every config group option composes, and the documented override names exist."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from rvsl.training.train import train

PUBLIC_OVERRIDES = [
    "data=fvrid",
    "data.root=/tmp/x",
    "data.image_size=[256,128]",
    "data.batch_size=24",
    "data.num_instances=4",
    "data.num_workers=2",
    "model.net.backbone=resnet34_ibn_a",
    "model.pretrained=/tmp/w.pth",
    "trainer.max_epochs=3",
    "trainer.max_steps=10",
    "trainer.limit_val_batches=2",
    "trainer.precision=bf16-mixed",
    "trainer.devices=1",
    "logger=csv",
    "paths.output_dir=/tmp/out",
    "init_from=/tmp/a.ckpt",
    "ckpt_path=last",
    "seed=3",
]


def test_the_documented_override_names_all_exist(compose_train):
    cfg = compose_train(*PUBLIC_OVERRIDES)
    assert cfg.data.image_size == [256, 128] and cfg.model.net.backbone == "resnet34_ibn_a"
    assert cfg.model.init_from == "/tmp/a.ckpt" and cfg.data.seed == 3


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_cpu"])
def test_every_trainer_config_composes(compose_train, trainer):
    cfg = compose_train(f"trainer={trainer}")
    assert cfg.trainer.use_distributed_sampler is False
    assert cfg.trainer.num_sanity_val_steps == 0


@pytest.mark.parametrize("experiment", ["syn_haze", "real_clear", "real_haze", "rvsl", "baseline"])
def test_every_experiment_composes_with_the_papers_settings(compose_train, experiment):
    cfg = compose_train(f"experiment={experiment}", "data.root=/data/FVRID")
    assert cfg.task_name == experiment
    assert cfg.model.net.backbone == "resnet18_ibn_a"  # the test's override wins over experiments
    if experiment == "rvsl":
        assert list(cfg.chain) == ["syn_haze", "real_clear", "real_haze"]


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "wandb"])
def test_every_logger_config_builds_its_logger(compose_train, logger, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_train(f"logger={logger}")
    loggers = [instantiate(entry) for entry in cfg.logger.values()]
    assert len(loggers) == 1


def test_a_tensorboard_run_writes_event_files(compose_train, tmp_path):
    from pathlib import Path

    cfg = compose_train("logger=tensorboard", "trainer.max_steps=2")
    train(cfg)
    assert list((Path(cfg.paths.output_dir) / "tensorboard").glob("events.out.tfevents.*"))
