"""``logger=wandb``: online only with credentials, else offline with a ``wandb sync`` hint; a
training run's offline files hold its config, scalars and pictures. Nothing here touches the
network: runs are offline, and online ones are only configured, never started."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import hydra
import pytest
from omegaconf import OmegaConf

from rvsl.training.train import train
from rvsl.utils import loggers
from rvsl.utils.loggers import finish_runs, wandb_credentials, wandb_logger, wandb_mode

FAKE_KEY = "local-" + "0123456789" * 4  # the format of a key; never sent anywhere


@pytest.fixture(autouse=True)
def no_wandb_account(tmp_path, monkeypatch):
    """wandb's folders in tmp_path, no API key, no netrc entry, no mode set, quiet."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        folder = tmp_path / "wandb_home" / var.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setattr(loggers, "_hydra", lambda: None)  # outside a Hydra app unless set
    yield
    finish_runs()


# ---------------------------------------------------------------- reading an offline run


def _records(path: Path):
    """The protobuf records of a ``run-<id>.wandb`` file. wandb 0.31 has no Python reader: the
    file is a LevelDB-style log (7-byte file header ``:W&B`` + magic + version, then 32 KiB blocks
    of chunks with a 7-byte header: CRC32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):  # still being written
            return
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(chunk)
            chunk = b""


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


def _offline_run(save_dir: Path, timeout: float = 30.0) -> SimpleNamespace:
    """The one offline run under ``save_dir/wandb``: its run record, merged config, history rows,
    final summary and folder. ``finish()`` returns before wandb's service has written the whole
    log, so this waits for the run's last record (``exit``)."""
    [folder] = (save_dir / "wandb").glob("offline-run-*")
    [log_file] = folder.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = list(_records(log_file))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{log_file}: no exit record after {timeout} s"
        time.sleep(0.2)
    run, config, history, summary = None, {}, [], {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "config":
            config |= {_key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary |= {_key(i): json.loads(i.value_json) for i in record.summary.update}
    return SimpleNamespace(run=run, config=config, history=history, summary=summary, dir=folder)


# ---------------------------------------------------------------- a tiny training run


def test_a_training_run_logs_config_scalars_and_pictures_to_an_offline_run(
    compose_train, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train("logger=wandb", "trainer.limit_train_batches=1")
    metrics = train(cfg)
    finish_runs()  # the summary is complete once the run is finished
    run = _offline_run(Path(cfg.paths.output_dir))
    assert run.run.display_name == f"{cfg.task_name}-run"  # <task_name>-<run folder name>
    assert run.run.job_type == "syn_haze" and list(run.run.tags) == ["stage-syn_haze"]
    assert run.config["model"]["net"]["backbone"] == "resnet18_ibn_a"
    assert run.config["stage"] == "syn_haze" and run.config["seed"] == cfg.seed
    logged = {k for row in run.history for k in row}
    for key in ("val/REAL_FOGGY/hazy/mAP", "val/SYN/clear/rank1", "train/syn/ce_clear_epoch"):
        assert key in logged, key
    assert run.summary["val/REAL_FOGGY/hazy/mAP"] == pytest.approx(
        metrics["val/REAL_FOGGY/hazy/mAP"]
    )
    # the panel of the fit's validation and the stage report of the best checkpoint
    pictures = run.dir / "files" / "media" / "images" / "pictures"
    assert list(pictures.glob("dehazing_SYN_*.png"))
    assert list((pictures / "best").glob("dehazing_SYN_*.png"))
    assert run.summary["pictures/dehazing_SYN._type"] == "images/separated"


# ---------------------------------------------------------------- the factory, no run started


def test_without_credentials_it_goes_offline_with_one_warning_naming_wandb_sync(tmp_path, caplog):
    assert wandb_credentials() is None
    with caplog.at_level(logging.WARNING, logger="rvsl.utils.loggers"):
        logger = wandb_logger(save_dir=str(tmp_path / "run"), task_name="train")
    assert logger._wandb_init["mode"] == "offline"
    [warning] = caplog.records
    assert "no credentials found" in warning.getMessage()
    assert f"wandb sync {tmp_path / 'run' / 'wandb'}/offline-run-*" in warning.getMessage()
    assert logger._wandb_init["name"] == "train-run" and logger._wandb_init["group"] is None


def test_wandb_mode_offline_is_honoured_quietly_and_disabled_is_left_to_wandb(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with caplog.at_level(logging.WARNING):
        assert wandb_logger(save_dir=str(tmp_path))._wandb_init["mode"] == "offline"
    assert not caplog.records
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == ("disabled", "WANDB_MODE=disabled")
    assert "mode" not in wandb_logger(save_dir=str(tmp_path))._wandb_init


def test_credentials_from_the_environment_or_netrc_mean_online_and_explicit_offline_wins(
    tmp_path, monkeypatch
):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_credentials() == "netrc"
    assert wandb_mode()[0] == "online"
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert wandb_credentials() == "WANDB_API_KEY"
    assert wandb_mode(offline=True)[0] == "offline"
    logger = wandb_logger(save_dir=str(tmp_path), offline=False, log_model=True)
    assert logger._wandb_init["mode"] == "online" and logger._log_model is True  # not started


def test_checkpoints_are_not_uploaded_offline(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        logger = wandb_logger(save_dir=str(tmp_path), offline=True, log_model=True)
    assert logger._log_model is False
    assert "log_model ignored" in caplog.text


def test_an_online_run_that_cannot_start_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    import wandb

    modes, finished = [], []

    def fake_init(**kwargs):  # stands in for the network: no run is started
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("no network")
        return SimpleNamespace(id="x", finish=lambda: finished.append(1))

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    logger = wandb_logger(save_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert logger.experiment.id == "x"
    assert modes == ["online", "offline"]
    assert "could not start an online run (no network)" in caplog.text
    assert "wandb sync" in caplog.text
    finish_runs()  # the next logger of the process starts a new run
    assert finished == [1]


def test_runs_of_a_multirun_share_a_group_named_after_the_sweep_folder(compose_train, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train("logger=wandb", "hydra.mode=MULTIRUN", "hydra.sweep.dir=/x/sweep_7")
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(loggers, "_hydra", HydraConfig.get)
    logger = hydra.utils.instantiate(cfg.logger.wandb)
    assert logger._wandb_init["group"] == f"{cfg.task_name}-sweep_7"
    assert logger._wandb_init["job_type"] == cfg.stage
    single = compose_train("logger=wandb")
    assert hydra.utils.instantiate(single.logger.wandb)._wandb_init["group"] is None


def test_importing_rvsl_does_not_import_wandb():
    code = (
        "import sys, rvsl.training.train, rvsl.utils.loggers, rvsl.evaluation.image_logging; "
        "assert 'wandb' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_stages_of_a_chain_share_their_run_folder_as_their_group(tmp_path, monkeypatch):
    hydra_cfg = OmegaConf.create({"mode": None, "runtime": {"output_dir": str(tmp_path / "run")}})
    monkeypatch.setattr(loggers, "_hydra", lambda: hydra_cfg)
    stage = wandb_logger(save_dir=str(tmp_path / "run" / "syn_haze"), task_name="train")
    assert stage._wandb_init["group"] == "train-run"
    assert stage._wandb_init["name"] == "train-syn_haze"
    assert wandb_logger(save_dir=str(tmp_path / "run"))._wandb_init["group"] is None


def test_rvsl_eval_can_log_to_wandb_too(compose_eval, tmp_path):
    cfg = compose_eval("logger=wandb", f"checkpoint={tmp_path / 'x.ckpt'}")
    logger = hydra.utils.instantiate(cfg.logger.wandb)
    assert logger._wandb_init["name"] == "eval-run" and logger._wandb_init["mode"] == "offline"
