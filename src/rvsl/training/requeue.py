"""Slurm time limits and pre-emption: save ``last.ckpt``, requeue the job, resume on restart.

Slurm warns a job shortly before killing it with the signal it was submitted with
(``--signal``): SIGUSR2 under ``hydra/launcher=slurm`` (submitit asks for it
``signal_delay_s`` seconds before the time limit; sites that set Slurm's
``PreemptParameters=send_user_signal`` send it on pre-emption too), SIGUSR1 in a plain ``sbatch``
script with ``#SBATCH --signal=USR1@90``. During ``trainer.fit`` :func:`requeue_on_signal`
turns it into Lightning's SIGTERM stop: the current batch ends and ``LastCheckpoint`` saves
``last.ckpt`` on every rank. Only then is the job requeued, because a requeue kills it: under
submitit by submitit's own handler (it resubmits the same job: same config, same run folder),
else by ``scontrol requeue``. Outside ``fit`` the requeue happens at once.

Slurm restarts a requeued job under its old job id with ``SLURM_RESTART_COUNT`` set;
:func:`resume_on_restart` then resumes from the run folder's ``last.ckpt``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

log = logging.getLogger(__name__)
SBATCH_SIGNAL = signal.SIGUSR1  # Lightning's default requeue signal too
REQUEUE_WAIT_S = 120  # how long other ranks wait for rank zero's requeue to end them


def resume_on_restart(ckpt_path: str | None, last_ckpt: Path) -> str | None:
    """``ckpt_path``, or ``last_ckpt`` when Slurm restarted this job and the run folder has one.

    A restarted job has the same command line as its first start, so its own ``ckpt_path``
    would resume from where the first start began; ``last.ckpt`` is newer. Without one (killed
    before the first save) the job starts as configured.
    """
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if not restarts or not last_ckpt.is_file():
        return ckpt_path
    if rank_zero_only.rank == 0:
        log.info("Slurm restart %d of this job: resuming from %s", restarts, last_ckpt)
    return str(last_ckpt)


def _warning_signal() -> signal.Signals | None:
    """The signal Slurm warns this job with: submitit's under submitit, SIGUSR1 in another
    Slurm job, none outside Slurm."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        from submitit import JobEnvironment

        return signal.Signals[f"SIG{JobEnvironment.USR_SIG}"]
    if os.environ.get("SLURM_JOB_ID"):
        return SBATCH_SIGNAL
    return None


def slurm_job_id() -> str:
    """The id ``scontrol`` knows this job by: ``ARRAYID_TASKID`` for an array task."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def _scontrol_requeue(signum: int, frame: FrameType | None) -> None:
    """Requeue this Slurm job (once, from rank zero); Slurm then ends this run."""
    if rank_zero_only.rank != 0:
        return
    job = slurm_job_id()
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    except OSError as err:
        log.error("scontrol requeue %s failed: %s", job, err)
        return
    if result.returncode:
        log.error("scontrol requeue %s failed: %s", job, result.stderr.strip())
    else:
        log.warning("requeued Slurm job %s: it resumes from last.ckpt when it restarts", job)


@contextlib.contextmanager
def requeue_on_signal() -> Iterator[None]:
    """Around ``trainer.fit``: Slurm's warning signal stops training as SIGTERM does (the batch
    ends, ``last.ckpt`` is saved), then requeues the job.

    The requeue also follows a fit that ended normally after the signal (the report after it
    might not finish in time), not one that failed. A signal that comes while Lightning's
    SIGTERM handler is not installed (before or after the training loop) requeues at once.
    """
    signum = _warning_signal()
    if signum is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signum)
    requeue: Callable[[int, FrameType | None], Any]
    requeue = previous if callable(previous) else _scontrol_requeue  # submitit's, or ours
    sigterm_outside_fit = signal.getsignal(signal.SIGTERM)
    seen: list[bool] = []
    pending: list[FrameType | None] = []  # the frame of a signal still to be acted on

    def on_warning(sig: int, frame: FrameType | None) -> None:
        if seen:
            return
        seen.append(True)
        stop = signal.getsignal(signal.SIGTERM)
        if stop is sigterm_outside_fit or not callable(stop):
            requeue(sig, frame)
            return
        if rank_zero_only.rank == 0:
            log.warning(
                "%s: Slurm's time limit or pre-emption is near; saving last.ckpt after this "
                "batch, then requeueing the job",
                signal.Signals(sig).name,
            )
        pending.append(frame)
        stop(signal.SIGTERM, frame)  # Lightning's: stop after this batch, as on SIGTERM

    signal.signal(signum, on_warning)
    try:
        yield
    except SIGTERMException:
        if pending:
            requeue(signum, pending[0])  # rank zero requeues (and under submitit exits)
            if rank_zero_only.rank != 0:
                # a task that exits first could make srun end rank zero before it requeues
                time.sleep(REQUEUE_WAIT_S)
        raise
    else:
        if pending:
            requeue(signum, pending[0])
    finally:
        signal.signal(signum, previous)
