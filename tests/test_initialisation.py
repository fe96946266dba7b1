"""How a run starts: ImageNet weights are required on real data, what a stage inherits from the
previous one, and the precision chosen for the device."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torchvision.models import resnet18

from rvsl.models.rvsl_net import RVSLNet
from rvsl.training.module import RVSLModule
from rvsl.training.train import build_model, resolve_precision, train
from rvsl.utils.config import RunConfigError


def test_an_fvrid_run_without_imagenet_weights_is_refused_naming_the_setting_and_file(
    compose_train,
):
    cfg = compose_train("model.pretrained=null", "model.net.backbone=resnet50_ibn_a")
    with pytest.raises(RunConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert "model.pretrained" in message and "resnet50_ibn_a-d9d0bb7b.pth" in message
    assert "torchvision ResNet-50" in message and "nothing is downloaded" in message
    assert "model.pretrained=scratch" in message
    assert not Path(cfg.paths.output_dir, "checkpoints").exists()  # refused before any work


def test_scratch_said_explicitly_trains_from_random_weights(compose_train):
    metrics = train(compose_train("model.pretrained=scratch", "trainer.max_steps=2"))
    assert "train/loss" in metrics


def test_a_later_stage_needs_no_imagenet_weights_because_it_starts_from_a_checkpoint():
    cfg = OmegaConf.create(
        {
            "model": {"pretrained": None, "net": {"backbone": "resnet50_ibn_a"}},
            "data": {"_target_": "rvsl.data.datamodule.RVSLDataModule", "root": "/data/FVRID"},
            "init_from": "/runs/stage1/best.ckpt",
        }
    )
    from rvsl.training.train import check_initialisation

    check_initialisation(cfg)  # no error
    with open_dict(cfg):
        cfg.init_from = None
    with pytest.raises(RunConfigError, match=r"model\.pretrained is not set"):
        check_initialisation(cfg)


def test_the_demo_world_trains_from_scratch_without_being_told():
    from rvsl.training.train import DEMO_DATA, check_initialisation

    cfg = OmegaConf.create(
        {"model": {"pretrained": None}, "data": {"_target_": DEMO_DATA, "root": "/d"}}
    )
    check_initialisation(cfg)


def test_a_pretrained_path_that_does_not_exist_is_named_before_any_work(compose_train, tmp_path):
    missing = tmp_path / "nowhere" / "resnet50_ibn_a.pth"
    cfg = compose_train(f"model.pretrained={missing}")
    with pytest.raises(RunConfigError, match=rf"model.pretrained={missing}: no such file"):
        train(cfg)


def test_pretrained_weights_of_another_depth_are_refused_naming_the_file_and_keys(
    compose_train, tmp_path
):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    cfg = compose_train(f"model.pretrained={path}", "model.net.backbone=resnet34_ibn_a")
    with pytest.raises(RunConfigError) as err:
        train(cfg)
    assert str(path) in str(err.value) and "missing keys" in str(err.value)
    assert "layer1.2.conv1.weight" in str(err.value)  # ResNet-34 has a third layer1 block
    assert not Path(cfg.paths.output_dir, "checkpoints").exists()


def test_a_file_that_is_not_a_resnet_state_dict_is_refused_naming_it(compose_train, tmp_path):
    path = tmp_path / "notes.pth"
    torch.save({"step": torch.tensor(3)}, path)
    with pytest.raises(RunConfigError, match=rf"{path}.*missing keys"):
        train(compose_train(f"model.pretrained={path}"))


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory) -> Path:
    """A stage-1 checkpoint whose classifier and discriminators differ from any fresh ones."""
    model = RVSLModule(RVSLNet("resnet18_ibn_a", num_classes=4), stage="syn_haze")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(("net.classifier", "disc_")):
                param.add_(1.0)
    path = tmp_path_factory.mktemp("ckpt") / "stage1.ckpt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def _equal(module: torch.nn.Module, saved: dict, prefix: str) -> bool:
    own = module.state_dict()
    return all(torch.equal(own[k], v) for k, v in saved.items() if k.startswith(prefix))


def test_a_stage_inherits_the_classifier_and_discriminators_by_default(stage1_checkpoint):
    saved = torch.load(stage1_checkpoint, weights_only=True)["state_dict"]
    model = RVSLModule(
        RVSLNet("resnet18_ibn_a", num_classes=4),
        stage="real_clear",
        init_from=str(stage1_checkpoint),
    )
    for part in ("net.enc_clear.", "net.trunk.", "net.gen_hazy.", "net.classifier.", "disc_"):
        assert _equal(model, saved, part), part


def test_the_official_hand_over_starts_with_a_fresh_classifier_and_fresh_discriminators(
    stage1_checkpoint,
):
    saved = torch.load(stage1_checkpoint, weights_only=True)["state_dict"]
    torch.manual_seed(0)
    model = RVSLModule(
        RVSLNet("resnet18_ibn_a", num_classes=4),
        stage="real_clear",
        init_from=str(stage1_checkpoint),
        inherit={"classifier": False, "discriminators": False},
    )
    for part in ("net.enc_clear.", "net.enc_hazy.", "net.trunk.", "net.gen_clear.", "net.bnneck"):
        assert _equal(model, saved, part), part
    classifier = model.net.classifier.weight
    assert not torch.equal(classifier, saved["net.classifier.weight"])
    assert classifier.std().item() == pytest.approx(0.001, rel=0.05)  # weights_init_classifier
    conv = model.disc_clear.model[0].weight
    assert not torch.equal(conv, saved["disc_clear.model.0.weight"])
    assert conv.std().item() == pytest.approx(0.02, rel=0.1)  # N(0, 0.02), CycleGAN's init


def test_a_fresh_classifier_may_have_another_number_of_identities(stage1_checkpoint):
    model = RVSLModule(
        RVSLNet("resnet18_ibn_a", num_classes=7),
        stage="real_clear",
        init_from=str(stage1_checkpoint),
        inherit={"classifier": False},
    )
    assert model.net.classifier.weight.shape == (7, 512)


def test_the_inherit_switches_reach_the_module_from_the_config(compose_train, stage1_checkpoint):
    cfg = compose_train(
        "stage=real_clear",
        f"init_from={stage1_checkpoint}",
        "model.inherit.classifier=false",
        "model.inherit.discriminators=false",
    )
    model = build_model(cfg, 4)
    saved = torch.load(stage1_checkpoint, weights_only=True)["state_dict"]
    assert _equal(model, saved, "net.trunk.")
    assert not _equal(model, saved, "net.classifier.")
    assert not _equal(model, saved, "disc_hazy.")


def _trainer_cfg(**values):
    return OmegaConf.create({"accelerator": "auto", **values})


def test_auto_precision_is_full_precision_on_a_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision(_trainer_cfg(precision="auto")) == "32-true"


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_precision_is_bf16_where_the_gpu_has_it_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision(_trainer_cfg(precision="auto")) == expected
    assert resolve_precision(_trainer_cfg(precision="auto", accelerator="cpu")) == "32-true"


def test_fp16_asked_for_on_a_cpu_becomes_full_precision_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert resolve_precision(_trainer_cfg(precision="16-mixed")) == "32-true"
    assert "16-mixed needs a GPU" in caplog.text
    assert resolve_precision(_trainer_cfg(precision="bf16-mixed")) == "bf16-mixed"  # as given


def test_the_fvrid_experiments_use_the_hardware_they_find(compose_train):
    for experiment in ("syn_haze", "real_clear", "real_haze", "rvsl", "baseline", "paper"):
        cfg = compose_train(f"experiment={experiment}")
        assert cfg.trainer.accelerator == "auto", experiment
        assert cfg.trainer.precision in ("auto", "16-mixed"), experiment
