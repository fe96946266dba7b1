"""Pictures to the active loggers: images where the logger can show them, PNG files elsewhere."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from rvsl.evaluation.pictures import save_png


def picture_file_name(key: str, step: int | None = None) -> str:
    """``pictures/dehazing_SYN`` at step 7 -> ``pictures_dehazing_SYN_step7.png``."""
    stem = key.replace("/", "_")
    return f"{stem}.png" if step is None else f"{stem}_step{step}.png"


@rank_zero_only
def log_picture(
    loggers: Iterable[Logger],
    key: str,
    picture: np.ndarray,
    step: int | None = None,
    caption: str | None = None,
) -> None:
    """Log one uint8 (H, W, 3) picture to every logger: wandb and TensorBoard show it as an
    image; any other logger (CSV, ...) gets ``<log_dir>/pictures/<key>_step<step>.png``, so
    no picture is silently dropped. Runs on global rank zero only."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            extra = {} if caption is None else {"caption": [caption]}
            logger.log_image(key=key, images=[picture], step=step, **extra)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, picture, global_step=step, dataformats="HWC")
        else:
            folder = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
            if folder is None:
                rank_zero_warn(f"{type(logger).__name__} has no log_dir: picture {key} not saved")
                continue
            save_png(picture, Path(folder) / "pictures" / picture_file_name(key, step))
