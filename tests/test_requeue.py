"""Slurm time limits and pre-emption: the warning signal saves ``last.ckpt``, the job requeues
itself, and the restarted job resumes in the same run folder.

No Slurm here. Under ``hydra/launcher=slurm`` the real ``rvsl-train -m`` submits through the
real launcher and submitit, with submitit's own fake ``sbatch``/``sacct`` (its test helpers) and
a fake ``scontrol``; the submitted job then runs in this process as Slurm would run it, and again
with ``SLURM_RESTART_COUNT`` set when it requeued itself. The plain ``sbatch`` path runs
``train`` with ``SLURM_JOB_ID`` set and a fake ``scontrol`` on PATH. A callback stands in for
Slurm's warning: it signals this process after a few training batches, in a first start only.
"""

from __future__ import annotations

import csv
import logging
import os
import signal
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from rvsl.training.requeue import requeue_on_signal, resume_on_restart, slurm_job_id
from rvsl.training.train import train

AT_BATCH = 2  # the warning comes after this many batches; baseline: one optimizer step each
BATCHES = 4  # of the one epoch: 6 identities x 4 images, batches of 3 x 2
RUN = [
    "stage=baseline",
    "trainer.max_epochs=1",
    "data.test_sets=[SYN]",
    "test_after_fit=false",
    "+callbacks.slurm_warning._target_=test_requeue.SlurmWarnsAfter",
    f"+callbacks.slurm_warning.batches={AT_BATCH}",
]
SLURM_VARS = (
    "SUBMITIT_EXECUTOR",
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_RESTART_COUNT",
)


class SlurmWarnsAfter(pl.Callback):
    """Sends this process ``signal`` after ``batches`` training batches, as Slurm does before a
    time limit; only in a job's first start (a restarted one has ``SLURM_RESTART_COUNT``)."""

    def __init__(self, batches: int, signal: str = "SIGUSR2") -> None:
        self.batches, self.signal, self.seen = batches, signal, 0

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.seen += 1
        if self.seen == self.batches and not os.environ.get("SLURM_RESTART_COUNT"):
            os.kill(os.getpid(), signal.Signals[self.signal])


@pytest.fixture(autouse=True)
def outside_slurm():
    """No Slurm variables but the test's; the signal handlers and logging as they were."""
    environ = {name: os.environ.pop(name, None) for name in (*SLURM_VARS, "SUBMITIT_FOLDER")}
    signals = (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR1, signal.SIGUSR2)
    handlers = {s: signal.getsignal(s) for s in signals}
    root = logging.getLogger()
    root_handlers, root_level = root.handlers[:], root.level
    yield
    for s, handler in handlers.items():
        signal.signal(s, handler)
    root.handlers[:], root.level = root_handlers, root_level
    for name, value in environ.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _epochs_logged(run_dir: Path) -> list[str]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [row["epoch"] for row in csv.DictReader(handle) if row.get("train/loss_epoch")]


RESUMING = pytest.mark.filterwarnings("ignore:.*exists and is not empty")  # the same folder


@pytest.mark.slow
@RESUMING
@pytest.mark.filterwarnings("ignore:The `srun` command is available")  # the fake srun
def test_a_time_limit_under_the_slurm_launcher_saves_requeues_and_resumes_in_the_same_folder(
    tiny_fvrid, tmp_path, monkeypatch
):
    from submitit.core import submission, utils
    from submitit.core.test_core import MockedSubprocess
    from submitit.slurm.slurm import SlurmJob

    from conftest import TINY_OVERRIDES
    from rvsl.cli.train import main

    class FakeSlurm(MockedSubprocess):
        """submitit's fake sbatch and sacct, and an scontrol that records requeues."""

        def __init__(self) -> None:
            super().__init__(known_cmds=["srun"])
            self.requeued: list[str] = []

        def __call__(self, command, **kwargs):
            if command[:2] == ["scontrol", "requeue"]:
                self.requeued.append(command[2])
                return b""
            return super().__call__(command, **kwargs)

    slurm = FakeSlurm()
    attempts: list[dict] = []
    job_ids: list[str] = []

    def run_as_slurm_would(job: SlurmJob) -> list:
        """In place of waiting for the job: run it here, and again while it requeues itself."""
        job_ids.append(job.job_id)
        submitted = utils.DelayedSubmission.load(job.paths.submitted_pickle)
        for restarts in range(3):
            restart = {"SLURM_RESTART_COUNT": str(restarts)} if restarts else {}
            requeues = len(slurm.requeued)
            with slurm.job_context(job.job_id), utils.environment_variables(**restart):
                try:
                    submission.process_job(job.paths.folder)
                    code = 0
                except SystemExit as exit_:
                    code = exit_.code
            delayed = utils.DelayedSubmission.load(job.paths.submitted_pickle)
            attempts.append({"exit": code, "submitted": submitted, "resubmitted": delayed})
            if len(slurm.requeued) == requeues:
                break
        outcome, result = utils.pickle_load(job.paths.result_pickle)
        assert outcome == "success", result
        return [result]

    sweep = tmp_path / "sweep"
    argv = ["rvsl-train", "-m", "hydra/launcher=slurm", *TINY_OVERRIDES, *RUN]
    argv += [f"data.root={tiny_fvrid}", f"hydra.sweep.dir={sweep}"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("RVSL_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(SlurmJob, "results", run_as_slurm_would)
    try:
        with slurm.context():
            main()
    finally:
        SlurmJob.watcher.clear()

    (script,) = sweep.glob(".submitit/*/*.sh")  # what sbatch was given
    assert "#SBATCH --signal=USR2@300" in script.read_text()
    assert slurm.requeued == job_ids  # the one job, once
    first, restarted = attempts
    assert first["exit"] == -1  # submitit's exit after requeueing
    assert restarted["exit"] == 0
    again = first["resubmitted"]  # what submitit requeued: the same job, same overrides
    assert type(again.function).__name__ == "SlurmLauncher"
    assert again.args[:4] == first["submitted"].args[:4]
    assert again._timeout_countdown == 10  # a pre-emption: no time-out counted
    assert [p.name for p in sweep.iterdir() if p.is_dir() and p.name[0] != "."] == ["0"]
    run_dir = sweep / "0"
    log = "".join(p.read_text() for p in run_dir.glob("*.log"))
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in log
    assert f"resumed at epoch 0, global step {AT_BATCH} " in log  # the warning's save
    final = _ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert (final["epoch"], final["global_step"]) == (0, BATCHES)  # the step went on
    assert _epochs_logged(run_dir) == ["0"]


@RESUMING
def test_under_plain_sbatch_usr1_saves_last_ckpt_calls_scontrol_and_the_restart_resumes(
    compose_train, tmp_path, monkeypatch, caplog
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {bin_dir / "calls"}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    overrides = (*RUN, "+callbacks.slurm_warning.signal=SIGUSR1")
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"

    with pytest.raises(SIGTERMException):  # rvsl-train exits with 143 on it
        train(compose_train(*overrides))
    assert _ckpt(last)["global_step"] == AT_BATCH
    assert (bin_dir / "calls").read_text() == "requeue 77\n"
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # put back

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # Slurm starts the same script again
    with caplog.at_level(logging.INFO):
        train(compose_train(*overrides))
    assert f"Slurm restart 1 of this job: resuming from {last}" in caplog.text
    assert f"resumed at epoch 0, global step {AT_BATCH} " in caplog.text
    assert (_ckpt(last)["epoch"], _ckpt(last)["global_step"]) == (0, BATCHES)
    assert (bin_dir / "calls").read_text() == "requeue 77\n"  # no second requeue
    assert _epochs_logged(run_dir) == ["0"]


def test_a_warning_outside_training_requeues_at_once_and_a_failed_fit_never_requeues(
    monkeypatch,
):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # submitit's handler is the one below
    requeues, stops = [], []
    submitit_handler = lambda signum, frame: requeues.append(signum)  # noqa: E731
    signal.signal(signal.SIGUSR2, submitit_handler)

    with requeue_on_signal():  # before Lightning handles SIGTERM: requeue now
        os.kill(os.getpid(), signal.SIGUSR2)
        assert requeues == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR2) is submitit_handler

    requeues.clear()
    with pytest.raises(RuntimeError), requeue_on_signal():
        signal.signal(signal.SIGTERM, lambda signum, frame: stops.append(signum))  # Lightning's
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stops == [signal.SIGTERM] and requeues == []  # stop first, requeue after
        raise RuntimeError("training crashed")
    assert requeues == []  # a crash is not requeued: it would crash again
    assert signal.getsignal(signal.SIGUSR2) is submitit_handler


def test_other_ranks_stop_after_rank_zero_has_requeued_and_wait_for_slurm_to_end_them(
    monkeypatch,
):
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from rvsl.training import requeue

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    events = []
    monkeypatch.setattr(requeue.time, "sleep", lambda s: events.append(("wait", s)))
    signal.signal(signal.SIGUSR2, lambda signum, frame: events.append("submitit"))  # returns
    with pytest.raises(SIGTERMException), requeue_on_signal():
        signal.signal(signal.SIGTERM, lambda signum, frame: events.append("stop"))  # Lightning's
        os.kill(os.getpid(), signal.SIGUSR2)
        assert events == ["stop"]
        raise SIGTERMException  # the batch ended: LastCheckpoint saved on every rank
    assert events == ["stop", "submitit", ("wait", requeue.REQUEUE_WAIT_S)]


def test_only_a_slurm_restart_resumes_from_the_run_folders_last_ckpt(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert resume_on_restart("old_run", last) == "old_run"  # killed before its first save
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resume_on_restart("old_run", last) == str(last)  # newer than where it started
    assert resume_on_restart(None, last) == str(last)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # a first start keeps what it was given
    assert resume_on_restart(None, last) is None


def test_scontrol_is_given_the_array_task_or_the_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    assert slurm_job_id() == "78"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "77_3"
