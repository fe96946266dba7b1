"""Pictures people look at: dehazing panels and rank lists, as uint8 RGB arrays and PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from rvsl.engine.checkpointing import atomic_write

GREEN = (0.1, 0.8, 0.1)
RED = (0.9, 0.1, 0.1)
GREY = (0.6, 0.6, 0.6)


def to_uint8(grid: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def save_png(picture: np.ndarray, path: str | Path) -> Path:
    """Write ``picture`` as a PNG, atomically: a kill or a full disk (``DiskFullError`` naming
    ``path``) leaves the previous picture whole."""
    path = Path(path)
    atomic_write(path, lambda handle: Image.fromarray(picture).save(handle, format="PNG"))
    return path


def dehazing_panel(
    hazy: torch.Tensor, dehazed: torch.Tensor, clear: torch.Tensor | None = None
) -> np.ndarray:
    """One row per image: hazy | dehazed | clear ground truth (when there is one)."""
    columns = [hazy, dehazed] if clear is None else [hazy, dehazed, clear]
    tiles = torch.stack([c.float().clamp(0, 1).cpu() for c in columns], dim=1).flatten(0, 1)
    return to_uint8(make_grid(tiles, nrow=len(columns), padding=2, pad_value=1.0))


def _framed(image: torch.Tensor, colour: tuple[float, float, float], width: int) -> torch.Tensor:
    framed = torch.tensor(colour).view(3, 1, 1).expand(3, *image.shape[-2:]).clone()
    framed[:, width:-width, width:-width] = image[:, width:-width, width:-width]
    return framed


def rank_list(
    query_images: torch.Tensor,
    gallery_images: torch.Tensor,
    distmat: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    top_k: int = 10,
) -> np.ndarray:
    """One row per query: the query (grey frame), then its ``top_k`` gallery matches under the
    ReID protocol (same identity AND camera left out), framed green if right, red if wrong."""
    width = max(1, query_images.shape[-1] // 32)
    rows = []
    for i in range(query_images.shape[0]):
        valid = ~((g_pids == q_pids[i]) & (g_camids == q_camids[i]))
        candidates = torch.nonzero(valid).squeeze(1)
        order = candidates[torch.argsort(distmat[i, candidates], stable=True)][:top_k]
        tiles = [_framed(query_images[i].float().cpu(), GREY, width)]
        for j in order.tolist():
            colour = GREEN if g_pids[j] == q_pids[i] else RED
            tiles.append(_framed(gallery_images[j].float().cpu(), colour, width))
        tiles += [torch.ones_like(tiles[0])] * (top_k + 1 - len(tiles))
        rows.extend(tiles)
    return to_uint8(make_grid(torch.stack(rows), nrow=top_k + 1, padding=2, pad_value=1.0))


def shown_gallery(
    distmat: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    top_k: int = 10,
) -> torch.Tensor:
    """Sorted gallery indices that :func:`rank_list` can show: every query's ``top_k`` under
    the protocol, in its stable order. Rank lists drawn on this subset are identical, and
    only these images need loading."""
    same = (g_pids[None, :] == q_pids[:, None]) & (g_camids[None, :] == q_camids[:, None])
    masked = distmat.masked_fill(same, float("inf"))
    order = torch.argsort(masked, dim=1, stable=True)[:, :top_k]
    return torch.unique(order[torch.gather(masked, 1, order).isfinite()])
