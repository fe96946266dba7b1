"""How well the dehazer restores synthetic hazy images: SSIM and PSNR of ``Gc`` vs clear."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from rvsl.models.rvsl_net import RVSLNet


@torch.no_grad()
def dehazing_quality(
    net: RVSLNet, pairs: Iterable[Mapping[str, torch.Tensor]], device: str | torch.device = "cpu"
) -> dict[str, float]:
    """Mean SSIM and PSNR (dB) over batches of ``dict(clear, hazy)`` images in [0, 1].

    The generator output has no activation, so it is clamped to [0, 1] first, as a
    saved picture would be.
    """
    # Local: one process sees every pair, and under DDP only rank zero calls this, so syncing
    # on compute would wait at a barrier for processes that never come.
    local = {"data_range": 1.0, "sync_on_compute": False}
    ssim = StructuralSimilarityIndexMeasure(**local).to(device)
    psnr = PeakSignalNoiseRatio(**local).to(device)
    was_training = net.training
    net.eval()
    try:
        for batch in pairs:
            clear, hazy = batch["clear"].to(device), batch["hazy"].to(device)
            dehazed = net.dehaze(hazy).float().clamp(0, 1)
            ssim.update(dehazed, clear)
            psnr.update(dehazed, clear)
    finally:
        net.train(was_training)
    return {"ssim": float(ssim.compute()), "psnr": float(psnr.compute())}
