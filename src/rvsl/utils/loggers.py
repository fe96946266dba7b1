"""The wandb logger of ``logger=wandb``: online with credentials, else offline with a sync hint.

wandb is imported only when a logger is built, so ``rvsl`` imports without it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)
DEFAULT_HOST = "https://api.wandb.ai"
_OFFLINE_MODES = ("offline", "dryrun")
_open_runs: list[Any] = []  # the wandb runs our loggers started and did not finish


def wandb_credentials() -> str | None:
    """Where a wandb API key would come from (``WANDB_API_KEY``, an identity token file, or the
    netrc entry of ``WANDB_BASE_URL``), or None. Reads files only: never the network."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(var):
            return var
    host = os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth  # wandb >= 0.2x: its own netrc lookup
    except ImportError:  # another wandb layout: the standard netrc file
        import netrc
        from urllib.parse import urlsplit

        try:
            path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
            entry = netrc.netrc(path).authenticators(urlsplit(host).netloc)
        except (OSError, netrc.NetrcParseError):
            return None
        return "netrc" if entry and entry[2] else None
    try:
        return "netrc" if read_netrc_auth(host=host) else None
    except Exception:  # a malformed entry: wandb could not log in with it either
        return None


def wandb_mode(offline: bool | None = None) -> tuple[str, str]:
    """``(mode, why)``: the wandb mode a run gets, and the reason.

    An explicit ``offline`` wins; else ``WANDB_MODE`` (offline/dryrun, disabled); else online
    when credentials are found, offline when not (``why == "no credentials"``).
    """
    if offline is not None:
        return ("offline" if offline else "online"), "offline=" + str(offline).lower()
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in _OFFLINE_MODES:
        return "offline", f"WANDB_MODE={env}"
    if env == "disabled":
        return "disabled", "WANDB_MODE=disabled"
    source = wandb_credentials()
    return ("online", f"credentials from {source}") if source else ("offline", "no credentials")


def sync_hint(save_dir: str | os.PathLike[str]) -> str:
    """The command that uploads this folder's offline runs later."""
    return f"wandb sync {Path(save_dir) / 'wandb'}/offline-run-*"


def _hydra() -> Any:
    """The Hydra config of this run, or None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def default_group(save_dir: str | os.PathLike[str], task_name: str | None = None) -> str | None:
    """The group runs share: in a Hydra multirun ``<task_name>-<sweep folder name>``; for the
    stages of a chain (sub-folders of the Hydra run folder) ``<task_name>-<run folder name>``;
    else None."""
    hydra_cfg = _hydra()
    if hydra_cfg is None:
        return None
    if str(OmegaConf.select(hydra_cfg, "mode", default=None)).endswith("MULTIRUN"):
        sweep = OmegaConf.select(hydra_cfg, "sweep.dir", default=None)
        return "-".join(filter(None, [task_name, Path(str(sweep)).name])) if sweep else None
    run_dir = OmegaConf.select(hydra_cfg, "runtime.output_dir", default=None)
    if run_dir and Path(run_dir).resolve() in Path(save_dir).resolve().parents:
        return "-".join(filter(None, [task_name, Path(run_dir).name]))
    return None


class RunWandbLogger(WandbLogger):
    """A WandbLogger whose run mode is passed to ``wandb.init`` (Lightning's ``offline`` would
    set ``WANDB_MODE`` for the whole process), and which falls back to offline when an online
    run cannot start (no network, a rejected key)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        import wandb

        starts = wandb.run is None  # else Lightning reuses the run in progress (wandb agent)
        if self._wandb_init.get("mode") == "online":
            try:
                run = WandbLogger.experiment.fget(self)
            except wandb.errors.Error as err:
                self._wandb_init["mode"] = "offline"
                self._log_model = False  # as for any offline run
                log.warning(
                    "wandb: could not start an online run (%s), logging offline to %s; "
                    "upload later with: %s",
                    err,
                    self.save_dir,
                    sync_hint(self.save_dir),
                )
        if self._experiment is None:
            run = WandbLogger.experiment.fget(self)
        if starts:
            _open_runs.append(run)
        return run


def finish_runs() -> None:
    """Finish the wandb runs our loggers started in this process (writes their files). A
    sequential Hydra multirun, a chain of stages or a test session would otherwise log into one
    run: Lightning reuses any run still in progress."""
    while _open_runs:
        _open_runs.pop().finish()


def wandb_logger(
    save_dir: str,
    project: str = "rvsl",
    name: str | None = None,
    task_name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: list[str] | None = None,
    log_model: bool | str = False,
    offline: bool | None = None,
    **kwargs: Any,
) -> RunWandbLogger:
    """The logger of ``conf/logger/wandb.yaml``.

    ``name`` defaults to ``<task_name>-<run folder name>``, ``group`` to :func:`default_group`,
    ``offline`` to :func:`wandb_mode`'s choice. Offline without credentials logs one warning
    with the ``wandb sync`` command. ``log_model`` uploads checkpoints as artifacts (online only).
    Runs of earlier loggers of this process are finished first.
    """
    finish_runs()
    mode, why = wandb_mode(offline)
    if name is None:
        name = "-".join(filter(None, [task_name, Path(save_dir).name]))
    if group is None:
        group = default_group(save_dir, task_name)
    if rank_zero_only.rank == 0:
        if why == "no credentials":
            log.warning(
                "wandb: no credentials found, logging offline to %s; upload later with: %s",
                save_dir,
                sync_hint(save_dir),
            )
        elif mode == "offline":
            log.info("wandb: offline (%s); upload later with: %s", why, sync_hint(save_dir))
    if log_model and mode != "online":
        if rank_zero_only.rank == 0:
            log.warning("wandb: %s run: checkpoints are not uploaded (log_model ignored)", mode)
        log_model = False
    if mode != "disabled":  # disabled: left to WANDB_MODE, as wandb does it
        kwargs["mode"] = mode
    logger = RunWandbLogger(
        save_dir=save_dir,
        project=project,
        name=name,
        group=group,
        job_type=job_type,
        tags=list(tags) if tags else None,
        log_model=log_model,
        **kwargs,
    )
    if logger._wandb_init.get("anonymous") is None:  # wandb 0.31 warns about the key itself
        logger._wandb_init.pop("anonymous", None)
    return logger
