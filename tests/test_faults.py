"""Interrupted runs: SIGKILL mid-epoch, a kill while saving, SIGTERM pre-emption, and resuming.

The run tests start ``python -m rvsl.cli.train`` as real subprocesses on the tiny FVRID tree:
stage 3 (two optimizers, a discriminator image pool), batches of 2 identities x 2 images, so an
epoch is 6 batches = 12 global steps, and validation only after the last epoch.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rvsl.training.checkpointing import AtomicCheckpointIO
from rvsl.training.train import build_trainer, resolve_ckpt_path, train
from rvsl.utils.config import RunConfigError
from rvsl.utils.files import atomic_torch_save

STEPS_PER_EPOCH = 12  # 6 batches x (main + hazy discriminator) optimizer steps
EPOCHS = 2
RUN_OVERRIDES = [
    "stage=real_haze",
    "data.batch_size=4",
    "model.net.generator_width=8",
    f"trainer.max_epochs={EPOCHS}",
    f"trainer.check_val_every_n_epoch={EPOCHS}",
    "test_after_fit=false",
    "~callbacks.dehazing_panel",
]
TIMEOUT = 300


def _command(tiny_fvrid: Path, run_dir: Path, *overrides: str) -> list[str]:
    from conftest import TINY_OVERRIDES

    chosen = {o.split("=", 1)[0] for o in (*RUN_OVERRIDES, *overrides) if "=" in o}
    base = [o for o in TINY_OVERRIDES if o.split("=", 1)[0] not in chosen]
    return [
        sys.executable,
        "-m",
        "rvsl.cli.train",
        *base,
        *RUN_OVERRIDES,
        f"data.root={tiny_fvrid}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def _start(tiny_fvrid: Path, run_dir: Path, *overrides: str) -> tuple[subprocess.Popen, Path]:
    """Start rvsl-train; its output goes to a file (a full pipe would stall it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir.parent / f"{run_dir.name}-{time.monotonic_ns()}.out"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    with open(out, "w") as handle:
        proc = subprocess.Popen(
            _command(tiny_fvrid, run_dir, *overrides),
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=run_dir.parent,
            env=env,
        )
    return proc, out


def _finish(proc: subprocess.Popen, out: Path, expect: int = 0) -> str:
    try:
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.read_text()
    assert proc.returncode == expect, text[-4000:]
    return text


def _train(tiny_fvrid: Path, run_dir: Path, *overrides: str) -> str:
    return _finish(*_start(tiny_fvrid, run_dir, *overrides))


def _step_on_disk(path: Path) -> int | None:
    """The global step in ``path``, read without loading the tensors (mmap). Saves are atomic,
    so whenever the file exists it is complete."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"]


def _wait_for_step(proc: subprocess.Popen, out: Path, path: Path, at_least: int) -> int:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        step = _step_on_disk(path)
        if step is not None and step >= at_least:
            return step
        if proc.poll() is not None:
            pytest.fail(f"rvsl-train ended before step {at_least}:\n{out.read_text()[-4000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no checkpoint at step >= {at_least} after {TIMEOUT} s")


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _adam_steps(ckpt: dict) -> list[list[float]]:
    """Per optimizer, the step count of each parameter's Adam state."""
    return [
        sorted(float(s["step"]) for s in opt["state"].values()) for opt in ckpt["optimizer_states"]
    ]


def _last_epoch_metrics(run_dir: Path) -> dict[str, float]:
    """The last epoch's training-loss row and validation row of ``metrics.csv``, merged."""
    with open(run_dir / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    train_row = [r for r in rows if r.get("train/loss_epoch")][-1]
    val_row = [r for r in rows if r.get("val/SYN/hazy/mAP")][-1]
    assert train_row["epoch"] == val_row["epoch"] == str(EPOCHS - 1)
    return {k: float(v) for row in (train_row, val_row) for k, v in row.items() if v}


@pytest.fixture(scope="module")
def uninterrupted(tiny_fvrid, tmp_path_factory) -> Path:
    """The run folder of the same run, never interrupted (no periodic saves: they change
    nothing but the disk)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    _train(tiny_fvrid, run_dir, "callbacks.last_checkpoint.every_n_batches=0")
    return run_dir


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_from_last_ckpt_like_an_uninterrupted_run(
    tiny_fvrid, tmp_path, uninterrupted
):
    reference = _load(uninterrupted / "checkpoints" / "last.ckpt")
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    every_batch = "callbacks.last_checkpoint.every_n_batches=1"
    proc, out = _start(tiny_fvrid, run_dir, every_batch)
    _wait_for_step(proc, out, last, at_least=4)  # 2 batches into epoch 0
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL

    killed = _load(last)  # whole, even if the kill came while a save was being written
    step = killed["global_step"]
    assert killed["epoch"] == 0 and 0 < step < STEPS_PER_EPOCH, "not mid-epoch"
    assert killed["state_dict"]["pool_hazy._extra_state"]["count"] > 0

    resumed_log = _train(tiny_fvrid, run_dir, every_batch, "ckpt_path=last")
    assert f"resumed at epoch 0, global step {step} " in resumed_log
    final = _load(last)
    # the counters and states continue: the same totals as the uninterrupted run
    assert final["global_step"] == reference["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert final["epoch"] == reference["epoch"]
    assert final["callbacks"]["LastCheckpoint"] == reference["callbacks"]["LastCheckpoint"]
    assert _adam_steps(final) == _adam_steps(reference)
    assert final["lr_schedulers"] == reference["lr_schedulers"]  # stepped once per epoch
    pool = final["state_dict"]["pool_hazy._extra_state"]
    assert pool["count"] == reference["state_dict"]["pool_hazy._extra_state"]["count"]
    # Metrics of the last epoch agree loosely here; tests/test_exact_resume.py proves the
    # batches, augmentations and random draws themselves equal an uninterrupted run's. On this
    # random tiny data mAP is near chance (3 query identities: it moves in steps of ~0.1).
    ours, theirs = _last_epoch_metrics(run_dir), _last_epoch_metrics(uninterrupted)
    assert ours["train/loss_epoch"] == pytest.approx(theirs["train/loss_epoch"], rel=0.15)
    maps = [k for k in theirs if k.startswith("val/") and k.endswith("/mAP")]
    assert len(maps) == 6  # 3 test sets x 2 branches
    assert abs(sum(ours[k] - theirs[k] for k in maps) / len(maps)) <= 0.2
    # selection=last: no best-epoch checkpoint is kept; last.ckpt is the selected one
    assert not any(k.startswith("ModelCheckpoint") for k in final["callbacks"])
    files = sorted(p.name for p in last.parent.iterdir())
    assert files == ["last.ckpt"]  # no temp file, no last-v1


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_143_and_the_run_resumes(tiny_fvrid, tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    rare = "callbacks.last_checkpoint.every_n_batches=1000"  # only epoch ends and SIGTERM save
    overrides = (rare,)
    proc, out = _start(tiny_fvrid, run_dir, *overrides)
    _wait_for_step(proc, out, last, at_least=STEPS_PER_EPOCH)  # the end of epoch 0
    time.sleep(0.3)  # into epoch 1
    proc.send_signal(signal.SIGTERM)
    log = _finish(proc, out, expect=143)

    step = _load(last)["global_step"]
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH  # no epoch end: the SIGTERM save
    assert f"pre-empted: saved {last} (epoch 1, global step {step})" in log
    assert f"ckpt_path=last hydra.run.dir={run_dir}" in log  # the resume command
    assert "Traceback" not in log

    resumed_log = _train(tiny_fvrid, run_dir, *overrides, "ckpt_path=last")
    assert f"resumed at epoch 1, global step {step} " in resumed_log
    assert _load(last)["global_step"] == 2 * STEPS_PER_EPOCH
    with open(run_dir / "csv" / "metrics.csv") as handle:  # both processes' rows, kept
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows if r.get("train/loss_epoch")] == ["0", "1"]


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]

    real_save = torch.save

    def dies_halfway(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)

    previous = io.load_checkpoint(path, weights_only=True)
    assert previous["step"] == 1 and torch.equal(previous["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


KEEPS_SAVING = """
import sys, torch
from rvsl.utils.files import atomic_torch_save
for i in range(10_000):
    atomic_torch_save({"i": i, "x": torch.full((4_000_000,), float(i))}, sys.argv[1])
    print(i, flush=True)
"""


def test_a_kill_while_saving_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-c", KEEPS_SAVING, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(3):  # three saves done, and the fourth under way
            done = int(proc.stdout.readline())
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["i"] >= done
    assert torch.equal(ckpt["x"], torch.full((4_000_000,), float(ckpt["i"])))
    # a temporary file of the killed process may remain; the next save removes it
    atomic_torch_save({"i": -1}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("trainer", ["default", "ddp_cpu"])
def test_every_trainer_config_writes_checkpoints_atomically(compose_train, trainer):

    cfg = compose_train(f"trainer={trainer}")
    built = build_trainer(cfg.trainer, logger=False)
    assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)


def test_ckpt_path_last_without_a_checkpoint_says_where_it_looked_and_how_to_resume(
    compose_train,
):
    cfg = compose_train("ckpt_path=last")
    expected = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(RunConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert f"no checkpoint at {expected}" in message
    assert "hydra.run.dir=<the old run folder>" in message


def test_ckpt_path_last_names_the_newest_interrupted_run_beside_this_one(tmp_path):
    runs = tmp_path / "train" / "runs"
    for name in ("2024-01-01_00-00-00", "2024-01-02_00-00-00"):
        atomic_torch_save({"global_step": 1}, runs / name / "checkpoints" / "last.ckpt")
        (runs / name / ".hydra").mkdir()
        (runs / name / ".hydra" / "overrides.yaml").write_text("[]\n")  # the same (no) overrides
    new = runs / "2024-01-03_00-00-00"
    new.mkdir()
    with pytest.raises(RunConfigError, match=r"newest one here: hydra.run.dir=.*01-02_00-00-00$"):
        resolve_ckpt_path("last", str(new))


def test_ckpt_path_may_name_the_interrupted_run_folder(tmp_path):
    old = tmp_path / "old"
    atomic_torch_save({"global_step": 1}, old / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path(str(old), str(tmp_path / "new")) == str(
        old / "checkpoints" / "last.ckpt"
    )
    assert resolve_ckpt_path("last", str(old)) == str(old / "checkpoints" / "last.ckpt")
    with pytest.raises(RunConfigError, match="no checkpoint at"):
        resolve_ckpt_path(str(tmp_path / "new"), str(tmp_path / "new"))


def test_a_resumed_chain_resumes_each_begun_stage_and_starts_the_others(compose_train, monkeypatch):
    from rvsl.training import chain

    cfg = compose_train("chain=[baseline,syn_haze,real_haze]", "ckpt_path=last")
    root = Path(cfg.paths.output_dir)
    for name in ("baseline", "syn_haze"):  # pre-empted during syn_haze
        atomic_torch_save({"global_step": 1}, root / name / "checkpoints" / "last.ckpt")
    seen = {}

    def fake_train(stage_cfg):
        seen[stage_cfg.stage] = stage_cfg.ckpt_path
        return {"best_model_path": str(root / stage_cfg.stage / "best.ckpt")}

    monkeypatch.setattr(chain, "train", fake_train)
    chain.run(cfg)
    assert seen == {"baseline": "last", "syn_haze": "last", "real_haze": None}


class FakeTrainer:
    """What LastCheckpoint reads of a trainer; records the saves."""

    def __init__(self, validating=False, last_batch=False):
        from types import SimpleNamespace

        from pytorch_lightning.trainer.states import TrainerFn

        self.state = SimpleNamespace(fn=TrainerFn.FITTING)
        self.sanity_checking = self.fast_dev_run = False
        self.validating, self.is_global_zero = validating, True
        self.global_step, self.current_epoch = 0, 0
        progress = SimpleNamespace(is_last_batch=last_batch)
        self.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
        self.saves = []

    def save_checkpoint(self, path, weights_only=None):
        self.saves.append(self.global_step)


def test_last_checkpoint_counts_batches_not_optimizer_steps_and_skips_an_epochs_last(tmp_path):
    from rvsl.training.checkpointing import LastCheckpoint

    callback, trainer = LastCheckpoint(str(tmp_path), every_n_batches=2), FakeTrainer()
    for batch in range(6):
        trainer.global_step += 3  # three optimizers
        trainer.fit_loop.epoch_loop.batch_progress.is_last_batch = batch == 3
        callback.on_train_batch_end(trainer, None, None, None, batch)
    assert trainer.saves == [6, 18]  # batch 4 was an epoch's last: the epoch-end save follows
    assert callback.state_dict() == {"batches": 6}


def test_sigterm_saves_unless_it_came_during_validation_and_other_errors_do_not(tmp_path):
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from rvsl.training.checkpointing import LastCheckpoint

    for trainer, error, saved in [
        (FakeTrainer(), SIGTERMException(), [0]),
        (FakeTrainer(validating=True), SIGTERMException(), []),
        (FakeTrainer(), RuntimeError("NaN"), []),
    ]:
        LastCheckpoint(str(tmp_path)).on_exception(trainer, None, error)
        assert trainer.saves == saved
