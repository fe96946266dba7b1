"""Pictures people look at: dehazing panels and rank lists, as uint8 RGB arrays and PNG files.

Each picture has one home here: :func:`dehazing_picture` is the dehazing panel the training
callback, the pictures after a stage and ``rvsl-eval`` all draw (of the images
:func:`first_images` picks), and :func:`rank_list_picture` the rank lists of a test set, drawn
by ``rvsl-eval``, after a stage and in the chain's comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset
from torchvision.utils import make_grid

from rvsl.utils.files import atomic_write

if TYPE_CHECKING:
    from rvsl.evaluation.features import SplitFeatures
    from rvsl.models.rvsl_net import RVSLNet

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


@torch.no_grad()
def dehazing_picture(
    net: RVSLNet,
    hazy: torch.Tensor,
    clear: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The dehazing panel of ``hazy`` (hazy | ``net.dehaze(hazy)`` | ``clear`` when given).

    The generator runs in evaluation mode without gradients; afterwards every submodule of
    ``net`` is back in the mode it was in (a frozen part stays frozen, a training one trains).
    """
    modes = {module: module.training for module in net.modules()}
    try:
        net.eval()
        dehazed = net.dehaze(hazy.to(device)).float().cpu()
    finally:
        for module, training in modes.items():
            module.train(training)
    return dehazing_panel(hazy, dehazed, clear)


def first_images(
    loader: Iterable[Mapping[str, Any]], columns: tuple[str, ...], count: int
) -> list[torch.Tensor]:
    """The first ``count`` rows of each of ``columns`` over a loader's batches (on the CPU),
    reading no batch past the one that completes them: the images a dehazing panel shows."""
    parts: dict[str, list[torch.Tensor]] = {c: [] for c in columns}
    found = 0
    for batch in loader:
        for c in columns:
            parts[c].append(batch[c][: count - found].cpu())
        found += parts[columns[0]][-1].shape[0]
        if found >= count:
            break
    if found == 0:
        raise ValueError("the loader has no images to draw")
    return [torch.cat(parts[c]) for c in columns]


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


def rank_list_picture(
    dataset: Dataset,
    split: SplitFeatures,
    distmat: torch.Tensor,
    num_queries: int = 8,
    top_k: int = 10,
) -> np.ndarray:
    """The :func:`rank_list` of the first ``num_queries`` queries of a test set.

    ``split`` holds the labels of ``dataset`` (queries first, then the gallery) and
    ``distmat`` the distances of at least its first ``num_queries`` queries to the gallery.
    Only the images shown are loaded from ``dataset``.
    """
    q, g = split.query, split.gallery
    rows = torch.arange(min(num_queries, len(q)))
    dist = distmat[rows]
    q_pids, g_pids = split.pids[q][rows], split.pids[g]
    q_cams, g_cams = split.camids[q][rows], split.camids[g]
    shown = shown_gallery(dist, q_pids, g_pids, q_cams, g_cams, top_k)
    query_images = torch.stack([dataset[int(i)]["image"] for i in q[rows]])
    gallery_images = torch.stack([dataset[int(g[j])]["image"] for j in shown.tolist()])
    return rank_list(
        query_images,
        gallery_images,
        dist[:, shown],
        q_pids,
        g_pids[shown],
        q_cams,
        g_cams[shown],
        top_k,
    )


# ---------------------------------------------------------------------- captions and charts
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont
WHITE = (255, 255, 255)
INK = (30, 30, 30)
AXIS = (120, 120, 120)
# distinguishable bar colours (Okabe-Ito first), cycled when there are more models
PALETTE = (
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (240, 228, 66),
    (0, 0, 0),
    (117, 112, 179),
    (166, 118, 29),
    (102, 166, 30),
    (153, 153, 153),
)


def _font(size: int) -> Font:
    """Pillow's bundled font at ``size`` pixels (its bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def _text_size(font: Font, text: str) -> tuple[int, int]:
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font)
    return right - left, bottom - top


def captioned(picture: np.ndarray, caption: str, size: int = 14) -> np.ndarray:
    """``picture`` under a white strip holding ``caption``: which model drew a rank list. The
    strip's height depends on the font size only, so captioned pictures stay aligned."""
    font = _font(size)
    height = _text_size(font, "Ag|")[1] + size
    canvas = Image.new("RGB", (picture.shape[1], picture.shape[0] + height), WHITE)
    canvas.paste(Image.fromarray(picture), (0, height))
    ImageDraw.Draw(canvas).text((4, size // 2), caption, fill=INK, font=font)
    return np.asarray(canvas)


def side_by_side(pictures: list[np.ndarray], gap: int = 12) -> np.ndarray:
    """Pictures in one row, top-aligned on white, ``gap`` pixels apart."""
    height = max(p.shape[0] for p in pictures)
    width = sum(p.shape[1] for p in pictures) + gap * (len(pictures) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    left = 0
    for picture in pictures:
        canvas[: picture.shape[0], left : left + picture.shape[1]] = picture[..., :3]
        left += picture.shape[1] + gap
    return canvas


@dataclass(frozen=True)
class _Plot:
    """Where a bar chart's plot area lies on its canvas, and its y scale."""

    left: int
    top: int
    height: int
    y_max: float

    @property
    def base(self) -> int:
        return self.top + self.height

    def y(self, value: float) -> int:
        return self.base - round(self.height * min(value, self.y_max) / self.y_max)


def _colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def _draw_y_axis(draw: ImageDraw.ImageDraw, plot: _Plot, right: int, font: Font) -> None:
    """The y axis with five ticks from 0 to the maximum, and the baseline up to ``right``."""
    for tick in range(5):
        value = plot.y_max * tick / 4
        draw.line([(plot.left - 4, plot.y(value)), (plot.left, plot.y(value))], fill=AXIS)
        draw.text((4, plot.y(value) - 7), f"{value:g}", fill=AXIS, font=font)
    draw.line([(plot.left, plot.top), (plot.left, plot.base)], fill=AXIS)
    draw.line([(plot.left, plot.base), (right, plot.base)], fill=AXIS)


def _draw_group(
    draw: ImageDraw.ImageDraw,
    plot: _Plot,
    left: int,
    label: str,
    values: list[float | None],
    bar_width: int,
    font: Font,
) -> None:
    """One group: a bar per value (none for ``None``) with its value above, the label below."""
    for index, value in enumerate(values):
        if value is None:
            continue
        x = left + index * bar_width
        draw.rectangle([x, plot.y(value), x + bar_width - 3, plot.base], fill=_colour(index))
        draw.text((x, plot.y(value) - 12), f"{value:.0f}", fill=INK, font=font)
    label_left = left + (len(values) * bar_width - _text_size(font, label)[0]) // 2
    draw.text((label_left, plot.base + 6), label, fill=INK, font=font)


def _draw_legend(
    draw: ImageDraw.ImageDraw, left: int, top: int, names: list[str], font: Font
) -> None:
    for index, name in enumerate(names):
        y = top + 22 * index
        draw.rectangle([left, y + 2, left + 12, y + 14], fill=_colour(index))
        draw.text((left + 18, y), name, fill=INK, font=font)


def grouped_bar_chart(
    groups: list[str],
    series: dict[str, list[float | None]],
    title: str,
    top: float | None = None,
    bar_width: int = 18,
) -> np.ndarray:
    """A grouped bar chart drawn with Pillow: one group per ``groups`` entry, one bar per
    series in each (``None``: no bar), the value printed above each bar, a legend on the
    right. The y axis runs from 0 to ``top`` (default: the largest value rounded up to 20)."""
    values = [v for row in series.values() for v in row if v is not None]
    y_max = top or max(20.0, math.ceil(max(values, default=0.0) / 20) * 20)  # ticks: whole 5s
    font, small = _font(14), _font(11)
    plot = _Plot(left=50, top=40, height=260, y_max=y_max)
    group_width = bar_width * (len(series) + 2)
    plot_right = plot.left + group_width * len(groups)
    legend_width = max((_text_size(font, name)[0] for name in series), default=0) + 40
    canvas = Image.new("RGB", (plot_right + legend_width + 20, plot.base + 40), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((plot.left, 10), title, fill=INK, font=font)
    _draw_y_axis(draw, plot, plot_right, small)
    for index, group in enumerate(groups):
        column = [row[index] for row in series.values()]
        left = plot.left + index * group_width + bar_width
        _draw_group(draw, plot, left, group, column, bar_width, small)
    _draw_legend(draw, plot_right + 20, plot.top, list(series), font)
    return np.asarray(canvas)


def line_chart(
    series: dict[str, list[tuple[float, float]]], title: str, x_label: str, width: int = 420
) -> np.ndarray:
    """A line chart drawn with Pillow: one polyline with dots per series of (x, y) points, a
    legend on the right. The y axis runs from 0 to the largest value rounded up to 20, the x
    axis from 0 to the largest x."""
    points = [p for line in series.values() for p in line]
    y_max = max(20.0, math.ceil(max((y for _, y in points), default=0.0) / 20) * 20)
    x_max = max((x for x, _ in points), default=1.0) or 1.0
    font, small = _font(14), _font(11)
    plot = _Plot(left=50, top=40, height=260, y_max=y_max)
    right = plot.left + width
    legend_width = max((_text_size(font, name)[0] for name in series), default=0) + 40
    canvas = Image.new("RGB", (right + legend_width + 20, plot.base + 44), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((plot.left, 10), title, fill=INK, font=font)
    _draw_y_axis(draw, plot, right, small)
    for tick in range(int(x_max) + 1):
        x = plot.left + round(width * tick / x_max)
        draw.line([(x, plot.base), (x, plot.base + 4)], fill=AXIS)
        draw.text((x - 3, plot.base + 6), str(tick), fill=AXIS, font=small)
    draw.text(
        (right - _text_size(small, x_label)[0], plot.base + 24), x_label, fill=AXIS, font=small
    )
    for index, line in enumerate(series.values()):
        xy = [(plot.left + round(width * x / x_max), plot.y(y)) for x, y in sorted(line)]
        if len(xy) > 1:
            draw.line(xy, fill=_colour(index), width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=_colour(index))
    _draw_legend(draw, right + 20, plot.top, list(series), font)
    return np.asarray(canvas)
