"""Bad inputs to a run stop it with one sentence before any training work; a full disk ends it
with one sentence naming the file and the last good checkpoint."""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest.mock import Mock

import pytest
import torch

from rvsl.models.checkpoint import CheckpointError, save_net
from rvsl.models.image_size import image_size_problem, smallest_square_size
from rvsl.training.preflight import RunFolderCheck, check_resume_checkpoint
from rvsl.training.train import build_model, resolve_ckpt_path, train
from rvsl.utils.config import RunConfigError
from rvsl.utils.files import DiskFullError

QUICK = ("model.net.generator_width=8", "test_after_fit=false")
BIN = Path(sys.executable).parent


class TrainingStartedError(Exception):
    """Raised in place of building the Trainer: the run got past every pre-flight check."""


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr("rvsl.training.train.build_trainer", Mock(side_effect=TrainingStartedError))


@pytest.fixture
def fvrid_copy(tiny_fvrid, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_fvrid, tmp_path / "FVRID_copy"))


# ---------------------------------------------------------------- the folders a run reads
def test_a_zero_byte_dehazing_ground_truth_stops_stage1_before_its_first_step(
    compose_train, fvrid_copy, no_training
):
    broken = min((fvrid_copy / "FVRID_syn" / "query_clear").iterdir())
    broken.write_bytes(b"")
    with pytest.raises(RunConfigError, match=f"{broken}: unreadable image"):
        train(compose_train("stage=syn_haze", f"data.root={fvrid_copy}"))


def test_a_resume_with_a_zero_byte_dehazing_ground_truth_stops_before_its_first_step(
    compose_train, fvrid_copy
):
    first = compose_train(f"data.root={fvrid_copy}", *QUICK, "trainer.max_steps=3")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"]
    broken = min((fvrid_copy / "FVRID_syn" / "gallery_clear").iterdir())
    broken.write_bytes(b"")
    resumed = compose_train(
        f"data.root={fvrid_copy}", *QUICK, "trainer.max_epochs=2", "ckpt_path=last"
    )
    with pytest.raises(RunConfigError, match=f"{broken}: unreadable image"):
        train(resumed)
    assert torch.load(last, weights_only=True)["global_step"] == step


def test_every_folder_a_run_reads_is_one_the_pre_flight_check_checked(compose_train, monkeypatch):
    """Stage 3 reads the most: synthetic pairs, real hazy images, every test set, and SYN's
    clear twins in the dehazing panel and the stage report."""
    import rvsl.data.datasets as datasets
    import rvsl.data.fvrid as fvrid
    import rvsl.training.train as engine

    checked: list[str] = []
    read: set[Path] = set()

    def spy(module, name, record):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: (record(*a, **k), real(*a, **k))[1])

    spy(
        engine,
        "require_valid_dataset",
        lambda root, folders, **_: checked.extend(str(Path(root) / f) for f in folders),
    )
    spy(fvrid, "_image_files", lambda folder: read.add(Path(folder)))
    spy(datasets, "load_image", lambda path: read.add(Path(path).parent))
    train(compose_train("stage=real_haze", "model.net.generator_width=8", "test_after_fit=true"))
    assert read and {str(f) for f in read} <= set(checked)


# ---------------------------------------------------------------- a full disk
def _fail_saves_after(monkeypatch, good: int, code: int = errno.ENOSPC) -> None:
    """torch.save writes half a file and fails as a full disk does, after ``good`` saves."""
    real_save, calls = torch.save, []

    def save(obj, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) <= good:
            return real_save(obj, handle, *args, **kwargs)
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded")],
)
def test_a_full_disk_while_saving_a_checkpoint_names_it_and_keeps_the_last_good_one(
    compose_train, monkeypatch, code, words
):
    cfg = compose_train(*QUICK, "callbacks.last_checkpoint.every_n_batches=1")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    _fail_saves_after(monkeypatch, good=1, code=code)
    with pytest.raises(DiskFullError) as err:
        train(cfg)
    assert str(err.value) == f"{words} while writing {last}; the last good checkpoint is {last}"
    monkeypatch.undo()
    assert torch.load(last, weights_only=True)["global_step"] == 3  # batch 1: 3 optimizer steps
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


def test_a_full_disk_while_writing_a_picture_names_the_picture(compose_train, monkeypatch):
    from PIL import Image

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    cfg = compose_train(*QUICK, "callbacks.last_checkpoint.every_n_batches=1")
    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(DiskFullError, match=r"while writing \S+dehazing_SYN\S*\.png; the last"):
        train(cfg)
    assert list(Path(cfg.paths.output_dir).rglob("*.png*")) == []  # nor a temporary file


FULL_DISK_RUN = """
import errno, runpy, sys, torch
real_save, calls = torch.save, []
def save(obj, handle, *args, **kwargs):
    calls.append(1)
    if len(calls) > 1:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(obj, handle, *args, **kwargs)
torch.save = save
sys.argv = ["rvsl-train", *sys.argv[1:]]
runpy.run_module("rvsl.cli.train", run_name="__main__")
"""


def _tiny_command(tiny_fvrid: Path, run_dir: Path, *overrides: str) -> list[str]:
    from conftest import TINY_OVERRIDES

    return [*TINY_OVERRIDES, f"data.root={tiny_fvrid}", f"hydra.run.dir={run_dir}", *overrides]


def _cli(command: list, tmp_path: Path) -> tuple[int, str]:
    env = dict(os.environ, RVSL_LOG_DIR=str(tmp_path / "logs"))
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    return done.returncode, done.stdout + done.stderr


def test_rvsl_train_on_a_full_disk_exits_2_with_one_sentence(tiny_fvrid, tmp_path):
    run_dir, saves = tmp_path / "run", "callbacks.last_checkpoint.every_n_batches=1"
    args = _tiny_command(tiny_fvrid, run_dir, *QUICK, saves)
    code, output = _cli([sys.executable, "-c", FULL_DISK_RUN, *args], tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert code == 2, output[-3000:]
    expected = f"no space left on device while writing {last}; the last good checkpoint is {last}"
    assert expected in output and "Traceback" not in output
    assert torch.load(last, weights_only=True)["global_step"] == 3


# ---------------------------------------------------------------- image sizes
@pytest.mark.parametrize("discriminators", [False, True])
def test_the_size_rule_is_the_networks_own(discriminators):
    from rvsl.models.discriminator import PatchDiscriminator
    from rvsl.models.rvsl_net import RVSLNet

    net = RVSLNet("resnet18_ibn_a", 4, 8).eval()
    disc = PatchDiscriminator(width=8).train()
    for h, w in itertools.product((1, 15, 16, 17, 31, 32, 33), (1, 16, 17, 32)):
        images, runs = torch.rand(2, 3, h, w), True
        try:
            with torch.no_grad():
                net.embed(images), net.dehaze(images), disc(images) if discriminators else None
        except (ValueError, RuntimeError):
            runs = False
        assert (image_size_problem((h, w), discriminators=discriminators) is None) == runs, (h, w)


@pytest.mark.parametrize(
    ("stage", "why"), [("baseline", "for the network: "), ("syn_haze", "for the PatchGAN ")]
)
def test_the_smallest_accepted_image_size_trains_one_step_and_one_pixel_less_is_refused(
    compose_train, stage, why
):
    n = smallest_square_size(discriminators=stage != "baseline")
    train(compose_train(f"stage={stage}", f"data.image_size=[{n},{n}]", "trainer.max_steps=1"))
    message = rf"=\[{n - 1},{n - 1}\] is too small {why}.* the smallest sizes are \[{n},{n}\]"
    with pytest.raises(RunConfigError, match=message):
        train(compose_train(f"stage={stage}", f"data.image_size=[{n - 1},{n - 1}]"))


def test_rvsl_export_refuses_an_image_size_too_small_naming_the_smallest(capsys):
    from rvsl.cli.export import main

    assert main(["checkpoint=none.ckpt", "out=onnx", "image_size=8"]) == 2
    error = capsys.readouterr().err
    assert "image_size=[8,8] is too small for the network" in error
    assert "the smallest sizes are [17,17], [16,17] and [17,16]" in error
    assert main(["checkpoint=none.ckpt", "out=onnx", "image_size=[16,17]"]) == 2
    assert "none.ckpt: no such file" in capsys.readouterr().err  # the size passed


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.image_size=[0,64]", r"data.image_size=\[0,64\]: image sizes must be positive"),
        ("stage=real_haze data.image_size=[16,16]", r"image_size=\[16,16\] is too small for"),
        ("model.optimizer.lr=0", r"model.optimizer.lr=0: a learning rate must be > 0"),
        ("model.disc_optimizer.lr=-1e-4", r"model.disc_optimizer.lr=-0.0001: a learning rate"),
        ("data.num_workers=-1", r"data.num_workers=-1: must be 0 .* or more"),
        ("trainer.max_epochs=0", r"trainer.max_epochs=0 trains nothing"),
        ("trainer.max_steps=0", r"trainer.max_steps=0 trains nothing"),
        ("trainer.limit_train_batches=0", r"trainer.limit_train_batches=0 trains nothing"),
    ],
)
def test_a_setting_that_cannot_train_is_refused_before_the_data_is_read(
    compose_train, tmp_path, override, message
):
    with pytest.raises(RunConfigError, match=message):
        train(compose_train(*override.split(), f"data.root={tmp_path}/nowhere"))


@pytest.mark.parametrize(
    ("warned", "quiet", "message"),
    [
        (
            "data.num_instances=6 data.batch_size=12",
            "data.num_instances=4 data.batch_size=8",
            "data.num_instances=6 but 6 of the 6 training identities have fewer images (median "
            "4, fewest 4): the PK sampler repeats their images to fill 6 per identity",
        ),
        (
            "trainer.limit_val_batches=1 data.eval_batch_size=4",
            "trainer.limit_val_batches=1.0 data.eval_batch_size=4",
            "trainer.limit_val_batches=1 validates only the first batches of each test set "
            "(queries first, then the gallery): SYN 4 of 12 images, REAL_CLEAR 4 of 9 images, "
            "REAL_FOGGY 4 of 9 images; the gallery is truncated, so mAP and rank-1 are not "
            "comparable",
        ),
    ],
    ids=["num_instances", "limit_val_batches"],
)
def test_a_setting_that_trains_badly_is_warned_about_with_the_numbers_and_training_goes_on(
    compose_train, no_training, caplog, warned, quiet, message
):
    with caplog.at_level(logging.WARNING), pytest.raises(TrainingStartedError):
        train(compose_train(*warned.split()))
    assert message in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(TrainingStartedError):
        train(compose_train(*quiet.split()))
    assert message.split(" ", 1)[0] not in caplog.text


# ---------------------------------------------------------------- ckpt_path
class Payload:
    """Any class: unpickling it would import and call code."""


def _model(compose_train, stage: str = "syn_haze", width: int = 8):

    cfg = compose_train(f"stage={stage}", f"model.net.generator_width={width}")
    return build_model(cfg, 6)


@pytest.fixture
def stage1_last(compose_train) -> Path:
    cfg = compose_train(*QUICK, "~callbacks.dehazing_panel")
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def test_ckpt_path_files_are_read_by_the_safe_loader_and_must_be_a_training_state(
    compose_train, stage1_last, tmp_path
):
    model = _model(compose_train)
    check_resume_checkpoint(str(stage1_last), model)  # a real last.ckpt passes
    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "crafted.ckpt")
    (tmp_path / "truncated.ckpt").write_bytes(stage1_last.read_bytes()[:4096])
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    save_net(model.net, tmp_path / "weights.ckpt")
    cases = {
        "crafted.ckpt": "refused to load: it holds Python objects",
        "truncated.ckpt": "not a readable PyTorch checkpoint",
        "notes.ckpt": "not a readable PyTorch checkpoint",
        "weights.ckpt": "holds weights but no training state to resume",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as err:
            check_resume_checkpoint(str(tmp_path / name), model)
        assert str(err.value).startswith("ckpt_path") and "weights_only=False" not in str(err)
    for other, message in [
        (_model(compose_train, "real_haze"), "saved by a stage=syn_haze run, and resuming"),
        (_model(compose_train, width=16), "its weights do not fit this run's network; wrong"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            check_resume_checkpoint(str(stage1_last), other)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage=syn_haze data.image_size=[16,16]", "data.image_size=[16,16] is too small"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 trains nothing"),
        ("ckpt_path={crafted}", "refused to load: it holds Python objects"),
    ],
)
def test_rvsl_train_stops_a_bad_input_with_one_sentence_and_exit_code_2(
    tiny_fvrid, tmp_path, override, message
):
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"payload": Payload()}, crafted)
    args = _tiny_command(tiny_fvrid, tmp_path / "run", *override.format(crafted=crafted).split())
    code, output = _cli([BIN / "rvsl-train", *args], tmp_path)
    assert code == 2, output[-3000:]
    assert message in output and "Traceback" not in output


def test_ckpt_path_last_suggests_only_a_run_of_the_same_task_and_overrides(tmp_path):
    runs = tmp_path / "train" / "runs"
    mine = ["stage=real_haze", "data.root=/data"]
    for name, overrides, task in [
        ("2024-01-01", [*mine, "ckpt_path=last", "hydra.run.dir=x"], "train"),
        ("2024-01-02", ["stage=syn_haze", "data.root=/data"], "train"),  # newer, other settings
        ("2024-01-03", list(reversed(mine)), "eval"),  # same overrides, another task
        ("2024-01-04", [], None),  # no .hydra folder
    ]:
        folder = runs / name
        (folder / "checkpoints").mkdir(parents=True)
        torch.save({}, folder / "checkpoints" / "last.ckpt")
        if task is not None:
            (folder / ".hydra").mkdir()
            (folder / ".hydra" / "overrides.yaml").write_text(json.dumps(overrides))  # YAML
            (folder / ".hydra" / "config.yaml").write_text(f"task_name: {task}\n")
    new = runs / "2024-01-05"
    new.mkdir()
    with pytest.raises(RunConfigError, match=r"newest one here: hydra.run.dir=\S+2024-01-01$"):
        resolve_ckpt_path("last", str(new), list(reversed(mine)), "train")
    with pytest.raises(RunConfigError) as err:
        resolve_ckpt_path("last", str(new), ["stage=baseline"], "train")
    assert "newest one here" not in str(err.value)


# ---------------------------------------------------------------- run folder, rvsl-eval
def test_a_run_folder_behind_a_file_stops_rvsl_train_with_one_sentence(tmp_path):
    (tmp_path / "file").write_text("in the way")
    code, output = _cli([BIN / "rvsl-train", f"hydra.run.dir={tmp_path}/file/run"], tmp_path)
    assert code == 2
    assert f"cannot create the run folder {tmp_path}/file/run (hydra.run.dir): " in output
    assert f"{tmp_path}/file is a file, not a folder" in output and "Traceback" not in output


def test_the_default_run_folder_is_checked_too(tmp_path):
    (tmp_path / "outputs").write_text("in the way")  # the default log_dir is ./outputs
    env = {k: v for k, v in os.environ.items() if k != "RVSL_LOG_DIR"}
    result = subprocess.run(
        [BIN / "rvsl-train"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert f"{tmp_path}/outputs is a file, not a folder" in output and "Traceback" not in output


def test_a_read_only_parent_of_the_run_folder_is_named(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    monkeypatch.setattr(Path, "mkdir", Mock(side_effect=PermissionError(errno.EACCES, "Denied")))
    config = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "runs" / "one")}}})
    with pytest.raises(SystemExit) as stop:
        RunFolderCheck().on_run_start(config=config)
    assert stop.value.code == 2
    assert f"{tmp_path} is not writable (Denied)" in capsys.readouterr().err


def test_rvsl_eval_without_a_checkpoint_says_it_is_required_and_exits_2(tiny_fvrid, tmp_path):
    command = [BIN / "rvsl-eval", "data=fvrid", f"data.root={tiny_fvrid}", "device=cpu"]
    code, output = _cli(command, tmp_path)
    assert code == 2, output[-3000:]
    assert "checkpoint= is required" in output and "Traceback" not in output
