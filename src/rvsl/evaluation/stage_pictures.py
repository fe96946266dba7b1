"""After a training stage: the pictures of its selected weights, and the dehazer's quality.

Not to be confused with :mod:`rvsl.evaluation.summary`, the results report a chain ends with:
this draws the stage's own pictures (the dehazing panel of SYN, the rank list of REAL_FOGGY)
into ``<run folder>/pictures`` and measures SSIM/PSNR on SYN alongside.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from pytorch_lightning.loggers import Logger

from rvsl.data.datamodule import RVSLDataModule
from rvsl.evaluation.evaluate import PICTURE_IMAGES, rank_lists_of
from rvsl.evaluation.image_logging import log_picture
from rvsl.evaluation.pictures import dehazing_picture, first_images, save_png
from rvsl.metrics.restoration import dehazing_quality
from rvsl.models.rvsl_net import RVSLNet

RANK_LIST_SET = "REAL_FOGGY"  # the set whose rank list a stage draws


def stage_pictures(
    net: RVSLNet,
    datamodule: RVSLDataModule,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    dehazing: bool = True,
    loggers: Iterable[Logger] = (),
    step: int | None = None,
    restoration: str = "standard",
) -> dict[str, float]:
    """PNGs in ``out_dir/pictures``, also logged to ``loggers`` at ``step``: the SYN dehazing
    panel (when ``dehazing``: the baseline has no trained generator) and the REAL_FOGGY rank
    list. Returns the dehazer's SSIM/PSNR on SYN measured with them (``val/SYN/dehaze/ssim``,
    ``.../psnr``; ``restoration``: the arithmetic, ``standard`` or ``reference``, see
    :mod:`rvsl.metrics.restoration`), or nothing without ``dehazing`` or a SYN set."""
    loggers = list(loggers)
    out = Path(out_dir) / "pictures"
    results: dict[str, float] = {}
    if dehazing and "SYN" in datamodule.val_set_names:
        pairs = datamodule.syn_test_pairs_dataloader()
        quality = dehazing_quality(net, pairs, device, restoration)
        results |= {"val/SYN/dehaze/ssim": quality["ssim"], "val/SYN/dehaze/psnr": quality["psnr"]}
        hazy, clear = first_images(pairs, ("hazy", "clear"), PICTURE_IMAGES)
        panel = dehazing_picture(net, hazy, clear, device)
        save_png(panel, out / "dehazing_SYN.png")
        log_picture(loggers, "pictures/best/dehazing_SYN", panel, step=step)
    if RANK_LIST_SET in datamodule.val_set_names:
        picture = rank_lists_of(net, datamodule, RANK_LIST_SET, device=device)
        save_png(picture, out / f"rank_list_{RANK_LIST_SET}.png")
        log_picture(loggers, f"pictures/best/rank_list_{RANK_LIST_SET}", picture, step=step)
    return results
