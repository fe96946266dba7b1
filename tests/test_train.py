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
from omegaconf import OmegaConf

from rvsl.models import load_net
from rvsl.models.rvsl_net import RVSLNet
from rvsl.training.train import build_model, build_trainer, train
from rvsl.utils.config import RunConfigError

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
        ("baseline", [], ["disc_clear", "disc_hazy", "gen_clear", "gen_hazy"]),
    ],
)
def test_each_stage_steps_the_main_optimizer_and_only_its_own_discriminators(
    compose_train, stage, stepped, idle
):
    cfg = compose_train(
        f"stage={stage}", "trainer.max_steps=2", "trainer.check_val_every_n_epoch=5"
    )
    model = build_model(cfg, 6)
    parts = {
        "net": model.net,
        "disc_clear": model.disc_clear,
        "disc_hazy": model.disc_hazy,
        "gen_clear": model.net.gen_clear,
        "gen_hazy": model.net.gen_hazy,
    }
    before = {name: _snapshot(part) for name, part in parts.items()}
    datamodule = hydra.utils.instantiate(cfg.data)
    trainer = build_trainer(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step > 0
    assert len(trainer.optimizers) == 1 + len(stepped)
    assert _changed(before["net"], model.net)
    for name in stepped:
        assert _changed(before[name], parts[name]), name
    for name in idle:
        assert not _changed(before[name], parts[name]), name


def test_a_later_stage_starts_from_the_earlier_stages_weights(compose_train):
    first = compose_train()
    selected = train(first)["selected_model_path"]
    cfg = compose_train("stage=real_haze", f"init_from={selected}")
    model = build_model(cfg, 6)
    saved = torch.load(selected, weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        if key.startswith(("net.", "disc_")):
            torch.testing.assert_close(value, saved[key], msg=key)


def test_stage3_trains_with_bf16_mixed_precision_and_manual_optimization(compose_train):
    cfg = compose_train("stage=real_haze", "trainer.precision=bf16-mixed", "trainer.max_steps=2")
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
            "trainer.max_steps=2",
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


def test_the_baseline_shares_one_encoder_between_both_branches(compose_train):
    cfg = compose_train("stage=baseline")
    model = build_model(cfg, 6)
    assert model.net.enc_clear is model.net.enc_hazy


def test_the_chain_runs_each_stage_from_the_previous_stages_selected_checkpoint(compose_train):
    from rvsl.training.chain import run

    cfg = compose_train("chain=[baseline,syn_haze,real_haze]", "test_after_fit=true")
    result = run(cfg)
    stages = result["stages"]
    assert list(stages) == ["baseline", "syn_haze", "real_haze"]
    root = Path(cfg.paths.output_dir)
    # selection=last (the default): each stage hands on its final weights, never a test pick
    first = Path(stages["syn_haze"]["selected_model_path"])
    assert first == root / "syn_haze" / "checkpoints" / "last.ckpt"
    assert stages["syn_haze"]["selection"] == "last epoch (epoch 1)"
    assert Path(stages["real_haze"]["selected_model_path"]).is_relative_to(root / "real_haze")
    hparams = torch.load(stages["real_haze"]["selected_model_path"], weights_only=True)
    assert hparams["hyper_parameters"]["init_from"] == str(first)
    stage1 = torch.load(stages["syn_haze"]["selected_model_path"], weights_only=True)
    assert stage1["hyper_parameters"]["init_from"] is None  # the baseline feeds nothing on
    hazy_table = (root / "summary.md").read_text().split("## Clear branch")[0]
    for stage in stages:
        assert f"\n| {stage} | " in hazy_table  # one row per model
    assert (root / "summary.json").is_file()
    assert (root / "rank_list_baseline_vs_rvsl.png").is_file()  # the same queries, both models


def test_resuming_with_ckpt_path_last_continues_the_global_step(compose_train):
    first = compose_train("trainer.max_epochs=1")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"]
    assert step > 0
    resumed = compose_train("trainer.max_epochs=2", "ckpt_path=last")
    train(resumed)
    assert torch.load(last, weights_only=True)["global_step"] == 2 * step  # one more epoch, not two


def test_a_batch_size_that_is_not_a_multiple_of_k_fails_before_training(compose_train):
    from rvsl.utils.config import RunConfigError

    with pytest.raises(RunConfigError, match=r"data.batch_size \(5\) must be a positive multiple"):
        train(compose_train("data.batch_size=5"))


def test_more_gpus_than_the_machine_has_fail_before_training(compose_train):
    cfg = compose_train("trainer=gpu", f"trainer.devices={torch.cuda.device_count() + 1}")
    with pytest.raises(RunConfigError, match=r"asks for \d+ GPUs, but this machine has"):
        train(cfg)


def test_too_few_identities_for_p_per_process_fail_before_processes_start(compose_train):
    # the tiny set has 6 synthetic identities; P = 6 / 2 = 3 per process, 3 processes need 9
    cfg = compose_train("trainer=ddp_cpu", "trainer.devices=3")
    with pytest.raises(RunConfigError, match="a step needs 9 distinct identities, but the"):
        train(cfg)


def test_a_multi_process_run_in_a_local_sweep_is_refused(compose_train):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    cfg = compose_train("trainer=ddp_cpu")
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.mode = RunMode.MULTIRUN  # as `rvsl-train -m ...` composes it
    HydraConfig().set_config(cfg)
    with pytest.raises(RunConfigError, match=r"trainer\.devices=2 in a local sweep"):
        train(cfg)


def test_a_missing_data_root_fails_before_training_naming_the_folder(compose_train, tmp_path):
    from rvsl.utils.config import RunConfigError

    with pytest.raises(RunConfigError, match="nowhere"):
        train(compose_train(f"data.root={tmp_path / 'nowhere'}"))


def test_stage3_without_a_real_hazy_folder_fails_before_training(compose_train, tmp_path):
    import shutil

    from conftest_data import make_fvrid
    from rvsl.utils.config import RunConfigError

    root = make_fvrid(tmp_path / "FVRID")
    shutil.rmtree(root / "FVRID_real" / "train_foggy")
    with pytest.raises(RunConfigError, match="train_foggy"):
        train(compose_train("stage=real_haze", f"data.root={root}"))


def test_a_bad_setting_stops_rvsl_train_with_one_sentence_and_exit_code_2(tiny_fvrid, tmp_path):
    env = dict(os.environ, RVSL_LOG_DIR=str(tmp_path / "logs"))
    result = subprocess.run(
        [
            Path(sys.executable).with_name("rvsl-train"),
            "data=fvrid",
            f"data.root={tiny_fvrid}",
            "data.batch_size=7",
            "model.pretrained=scratch",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "data.batch_size (7) must be a positive multiple of data.num_instances (6)" in output
    assert "Traceback" not in output


def test_a_clear_only_baseline_never_looks_at_a_hazy_image():
    from rvsl.training.module import RVSLModule

    torch.manual_seed(0)
    model = RVSLModule(
        RVSLNet("resnet18_ibn_a", num_classes=3), stage="baseline", baseline_domains=["clear"]
    )
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    batch = {
        "syn": {
            "clear": torch.rand(6, 3, 32, 32),
            "hazy": torch.full((6, 3, 32, 32), float("nan")),
            "pid": pids,
        }
    }
    terms = model.spec.objective(model.context, batch).terms
    assert set(terms) == {"syn/ce", "syn/triplet"}
    assert all(torch.isfinite(v) for v in terms.values())


def test_a_chain_entry_may_name_itself_and_carry_its_own_overrides():
    from rvsl.training.chain import ChainEntry, parse_entry

    assert parse_entry("real_haze") == ChainEntry("real_haze", "real_haze")
    entry = {
        "stage": "baseline",
        "name": "clear_only",
        "max_epochs": 3,
        "overrides": ["model.baseline_domains=[clear]"],
    }
    assert parse_entry(entry) == ChainEntry(
        "baseline",
        "clear_only",
        ("model.baseline_domains=[clear]", "trainer.max_epochs=3"),
    )
    with pytest.raises(ValueError, match="chain entry"):
        parse_entry({"stage": "baseline", "epochs": 3})
