"""``rvsl-train [overrides]``: train RVSL from the Hydra configs in ``conf/``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rvsl.engine.train import train


@hydra.main(version_base="1.3", config_path="pkg://rvsl.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get("best_model_score")  # what an optimisation sweep maximises


if __name__ == "__main__":
    main()
