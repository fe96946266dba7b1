"""After a stage: dehazing quality on SYN and the pictures (dehazing panel, rank list)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import Logger

from rvsl.data.datamodule import RVSLDataModule
from rvsl.evaluation.evaluate import extract_features
from rvsl.evaluation.evaluate import rank_list_picture as draw_rank_lists
from rvsl.evaluation.image_logging import log_picture
from rvsl.evaluation.pictures import dehazing_panel, save_png
from rvsl.metrics.distance import pairwise_distance
from rvsl.metrics.restoration import dehazing_quality
from rvsl.models.rvsl_net import RVSLNet


def rank_list_picture(
    net: RVSLNet,
    datamodule: RVSLDataModule,
    test_set: str,
    branch: str = "hazy",
    num_queries: int = 6,
    top_k: int = 10,
    device: str | torch.device = "cpu",
) -> Any:
    """Rank lists of the first ``num_queries`` queries of ``test_set`` through one branch."""
    loader = datamodule.val_dataloader()[datamodule.val_set_names.index(test_set)]
    split = extract_features(net, loader, (branch,), device)
    q, g = split.query[:num_queries], split.gallery
    features = split.features[branch]
    distmat = pairwise_distance(features[q], features[g])
    return draw_rank_lists(loader.dataset, split, distmat, num_queries, top_k)


def stage_report(
    net: RVSLNet,
    datamodule: RVSLDataModule,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    dehazing: bool = True,
    loggers: Iterable[Logger] = (),
    step: int | None = None,
    restoration: str = "standard",
) -> dict[str, float]:
    """SSIM/PSNR of the dehazer on SYN (when ``dehazing``: the baseline has no trained
    generator), and PNGs in ``out_dir/pictures``, also logged to ``loggers`` at ``step``.
    ``restoration``: the SSIM/PSNR arithmetic, ``standard`` or ``reference`` (see
    :mod:`rvsl.metrics.restoration`)."""
    loggers = list(loggers)
    out = Path(out_dir) / "pictures"
    results: dict[str, float] = {}
    if dehazing and "SYN" in datamodule.val_set_names:
        pairs = datamodule.syn_test_pairs_dataloader()
        quality = dehazing_quality(net, pairs, device, restoration)
        results |= {"val/SYN/dehaze/ssim": quality["ssim"], "val/SYN/dehaze/psnr": quality["psnr"]}
        batch = next(iter(pairs))
        hazy, clear = batch["hazy"][:8].to(device), batch["clear"][:8]
        with torch.no_grad():
            net.eval()
            dehazed = net.dehaze(hazy).cpu()
        panel = dehazing_panel(hazy.cpu(), dehazed, clear)
        save_png(panel, out / "dehazing_SYN.png")
        log_picture(loggers, "pictures/best/dehazing_SYN", panel, step=step)
    target = "REAL_FOGGY" if "REAL_FOGGY" in datamodule.val_set_names else None
    if target is not None:
        picture = rank_list_picture(net, datamodule, target, device=device)
        save_png(picture, out / f"rank_list_{target}.png")
        log_picture(loggers, f"pictures/best/rank_list_{target}", picture, step=step)
    return results
