"""evaluate a checkpoint on the test sets

``rvsl-eval checkpoint=PATH [data=fvrid data.root=PATH] [test_set=...] [eval.*=...]``. The
command line only: Hydra composes the configuration, :func:`rvsl.evaluation.run.run`
does the work, and this prints its table, or one ``rvsl-eval: ...`` line (exit code 2) for an
error the user can fix.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rvsl.evaluation.run import USER_ERRORS, run
from rvsl.utils.run_folder import claim_run_folder

log = logging.getLogger("rvsl-eval")


@hydra.main(version_base="1.3", config_path="pkg://rvsl.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        own_log = f"{HydraConfig.get().job.name}.log"
        claim_run_folder(cfg.paths.output_dir, "rvsl-eval", own=(own_log,))
        done = run(cfg)
    except USER_ERRORS as err:
        log.error("rvsl-eval: %s", err)
        sys.exit(2)
    if done is None:  # a helper rank of devices=N: rank 0 reports
        return
    print(done.table)
    print(f"\nresults: {done.results_file}")


if __name__ == "__main__":
    main()
