"""``rvsl-train [overrides]``: train RVSL from the Hydra configs in ``conf/``."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from rvsl.engine.chain import run
from rvsl.engine.train import RunConfigError
from rvsl.models.checkpoint import CheckpointError

log = logging.getLogger("rvsl-train")


@hydra.main(version_base="1.3", config_path="pkg://rvsl.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except (RunConfigError, CheckpointError) as err:
        log.error("rvsl-train: %s", err)  # to the console and the run folder's log
        sys.exit(2)
    return metrics.get("best_model_score")  # what an optimisation sweep maximises


if __name__ == "__main__":
    main()
