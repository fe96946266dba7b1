"""How well the dehazer restores synthetic hazy images: SSIM and PSNR of ``Gc`` vs clear.

Two arithmetics (``restoration``): ``standard`` is torchmetrics over the whole set on the output
clamped to [0, 1]; ``reference`` reproduces the authors' evaluation, so numbers compare with
the paper's: per batch, SSIM with an 11x11 gaussian window (sigma 1.5) zero-padded at the
borders and PSNR of the batch's mean squared error, both on the raw output (no clamp), then the
plain mean over batches (so it depends on the batch size).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from rvsl.models.rvsl_net import RVSLNet

RESTORATION_METRICS = ("standard", "reference")
WINDOW_SIZE, WINDOW_SIGMA = 11, 1.5
C1, C2 = 0.01**2, 0.03**2  # SSIM stabilisers for a data range of 1


def check_restoration(value: str, setting: str = "restoration_metrics") -> str:
    """``value`` if it names a restoration arithmetic, else a ValueError naming ``setting``."""
    if value not in RESTORATION_METRICS:
        raise ValueError(f"{setting} must be one of {RESTORATION_METRICS}, got {value!r}")
    return value


def gaussian_window(
    channels: int, size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA
) -> torch.Tensor:
    """The (channels, 1, size, size) normalised gaussian window of a depthwise convolution."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2)).float()
    g = (g / g.sum()).unsqueeze(1)
    return (g @ g.t()).expand(channels, 1, size, size).contiguous()


def reference_ssim(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SSIM map of a (N, C, H, W) batch: gaussian window, zero padding, every pixel."""
    channels = output.shape[1]
    window = gaussian_window(channels).to(output)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=WINDOW_SIZE // 2, groups=channels)

    mu_x, mu_y = blur(output), blur(target)
    var_x = blur(output * output) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(output * target) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / (
        (mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2)
    )
    return ssim_map.mean()


def reference_psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, peak 1) of a batch from its mean squared error over every value."""
    mse = torch.mean((output - target) ** 2)
    return 20 * torch.log10(1.0 / torch.sqrt(mse))


@torch.no_grad()
def dehazing_quality(
    net: RVSLNet,
    pairs: Iterable[Mapping[str, torch.Tensor]],
    device: str | torch.device = "cpu",
    restoration: str = "standard",
) -> dict[str, float]:
    """Mean SSIM and PSNR (dB) over batches of ``dict(clear, hazy)`` images in [0, 1].

    ``standard``: the generator output has no activation, so it is clamped to [0, 1] first, as
    a saved picture would be, and the metrics run over the whole set. ``reference``: the
    authors' arithmetic (see the module docstring).
    """
    check_restoration(restoration)
    # Local: one process sees every pair, and under DDP only rank zero calls this, so syncing
    # on compute would wait at a barrier for processes that never come.
    local = {"data_range": 1.0, "sync_on_compute": False}
    ssim = StructuralSimilarityIndexMeasure(**local).to(device)
    psnr = PeakSignalNoiseRatio(**local).to(device)
    per_batch: list[tuple[float, float]] = []
    was_training = net.training
    net.eval()
    try:
        for batch in pairs:
            clear, hazy = batch["clear"].to(device), batch["hazy"].to(device)
            dehazed = net.dehaze(hazy).float()
            if restoration == "reference":
                clear = clear.float()
                per_batch.append(
                    (float(reference_ssim(dehazed, clear)), float(reference_psnr(dehazed, clear)))
                )
            else:
                ssim.update(dehazed.clamp(0, 1), clear)
                psnr.update(dehazed.clamp(0, 1), clear)
    finally:
        net.train(was_training)
    if restoration == "reference":
        if not per_batch:
            raise ValueError("no image pairs to measure the dehazer on")
        return {
            "ssim": sum(s for s, _ in per_batch) / len(per_batch),
            "psnr": sum(p for _, p in per_batch) / len(per_batch),
        }
    return {"ssim": float(ssim.compute()), "psnr": float(psnr.compute())}
