"""``rvsl-train [overrides]``: train RVSL from the Hydra configs in ``conf/``."""

from __future__ import annotations

import logging
import shlex
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from rvsl.models.checkpoint import CheckpointError
from rvsl.training.chain import run
from rvsl.training.nonfinite import NonFiniteLossError
from rvsl.training.preflight import RESUME_KEYS
from rvsl.utils.config import RunConfigError
from rvsl.utils.files import DiskFullError
from rvsl.utils.run_folder import claim_run_folder

log = logging.getLogger("rvsl-train")


@hydra.main(version_base="1.3", config_path="pkg://rvsl.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        own_log = f"{HydraConfig.get().job.name}.log"
        claim_run_folder(cfg.paths.output_dir, "rvsl-train", own=(own_log,))
        metrics = run(cfg)
    except (RunConfigError, CheckpointError, NonFiniteLossError) as err:
        log.error("rvsl-train: %s", err)  # to the console and the run folder's log
        sys.exit(2)
    except DiskFullError as err:  # the checkpoint or picture being written was not kept
        logging.raiseExceptions = False  # the log file may not take this line: no traceback
        log.error("rvsl-train: %s", err)
        sys.exit(2)
    except SIGTERMException:  # pre-empted: LastCheckpoint saved last.ckpt on the way out
        if rank_zero_only.rank == 0:  # DDP: every process gets here
            log.warning("rvsl-train: pre-empted (SIGTERM); resume with: %s", resume_command())
        sys.exit(143)  # 128 + SIGTERM, as if the signal had killed the process
    return objective(metrics)


def objective(metrics: dict) -> float:
    """What a sweep maximises: the selected checkpoint's hazy mAP on VAL, held-out training
    identities (``best_model_score``), never a test set's; 0.0 without one."""
    return float(metrics.get("best_model_score") or 0.0)


def resume_command() -> str:
    """This command again, continuing in the same run folder from its ``last.ckpt``."""
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(RESUME_KEYS)]
    overrides += ["ckpt_path=last", f"hydra.run.dir={hydra_cfg.runtime.output_dir}"]
    return shlex.join(["rvsl-train", *overrides])


if __name__ == "__main__":
    main()
