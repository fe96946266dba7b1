"""The results page of ``rvsl-search query``: one static HTML file and its thumbnails.

:func:`write_results_page` writes ``out_dir/index.html`` and ``out_dir/images/``: one row per
query (its thumbnail, the network's dehazed view, then its top-K gallery matches framed green
when right, red when wrong, grey when identities are unknown). The page is opened from disk
(``file://``) with no server and no network, so it carries its CSS inline, no script, no
external resource, and refers to its thumbnails by relative URLs: the folder can be moved,
copied or zipped as a whole. Every text is HTML-escaped and every URL percent-quoted, because
file names may hold spaces, quotes, ``&``, ``#``, ``%`` or any Unicode.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from PIL import Image

from rvsl.data.transforms import ImageReadError, load_image
from rvsl.utils.files import atomic_write

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGES = "images"
NO_MATCH = "no match within the distance threshold"
FRAMES = {True: "correct", False: "wrong", None: "neutral"}
#: the names this module gives thumbnails; only these are pruned from ``images/`` on a re-run
THUMB_NAME = re.compile(r"^[0-9a-f]{12}-[A-Za-z0-9_-]{1,40}\.(jpg|png)$")
#: timestamps in [2000, 2100) are shown as UTC dates; others as a plain clock in seconds
_UNIX_RANGE = (946_684_800.0, 4_102_444_800.0)

_CSS = """
body{font:13px/1.35 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px;color:#222;
background:#fafafa}
h1{font-size:20px;margin:0 0 6px}
.notes,.legend{margin:4px 0;color:#555}
.legend span{display:inline-block;border-width:4px;border-style:solid;padding:0 4px;
margin-right:6px}
table{border-collapse:collapse;margin-top:10px}
th,td{border-top:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}
.matches{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;border:4px solid #bbb;padding:2px;background:#fff;width:min-content}
figure.query,figure.dehazed{border-color:#555}
.correct{border-color:#1a9c1a}
.wrong{border-color:#d62020}
.neutral{border-color:#bbb}
img{display:block;height:THUMBpx;width:auto}
figcaption{font-size:11px;color:#333;overflow-wrap:anywhere;min-width:100px}
.name{color:#777}
.missing{display:flex;align-items:center;justify-content:center;text-align:center;
height:THUMBpx;width:max(100px, calc(THUMBpx * 0.75));background:#eee;color:#a00;
font-size:11px;overflow-wrap:anywhere}
.nomatch{color:#666;font-style:italic;padding:8px}
"""


@dataclass(frozen=True)
class Match:
    """One gallery match of a query, as the page shows it."""

    path: str  # the gallery image file (absolute or relative to cwd)
    rank: int  # 1-based
    distance: float
    camera: str | None
    timestamp: float | None  # seconds (unix time or any numeric clock); None when unknown
    correct: bool | None  # same identity as the query, when identities are known; else None


@dataclass(frozen=True)
class QueryRow:
    """One query and its matches (nearest first; empty when none is under the threshold)."""

    query: str
    camera: str | None
    dehazed: PILImage | None  # the network's dehazed view of the query, if any
    matches: tuple[Match, ...]
    haze: float | None = None  # the query's haze score
    branch: str | None = None  # which encoder embedded it (hazy/clear/fuse)


def safe_stem(stem: str) -> str:
    """A file-name stem reduced to ASCII letters, digits, ``_`` and ``-`` (1 to 40 of them)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:40] or "image"


def time_text(timestamp: float | None) -> str | None:
    """A UTC date for a plausible unix time, else the clock's value in seconds."""
    if timestamp is None:
        return None
    if math.isfinite(timestamp) and _UNIX_RANGE[0] <= timestamp < _UNIX_RANGE[1]:
        return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"t {timestamp:.10g} s"


class _Thumbnails:
    """The thumbnails of one page write, in ``folder``: each source is read and written once
    (a gallery image matched by many queries included). A value is ``(file name, width)``, or
    the ImageReadError of a source that could not be read."""

    def __init__(self, folder: Path, height: int) -> None:
        self.folder, self.height = folder, height
        self.made: dict[str, tuple[str, int] | ImageReadError] = {}

    def of_file(self, path: str) -> tuple[str, int] | ImageReadError:
        key = os.path.abspath(path)
        if key not in self.made:
            try:
                pixels = load_image(path).permute(1, 2, 0).contiguous().numpy()
            except ImageReadError as err:
                self.made[key] = err
            else:
                name = _hashed(os.fsencode(key), Path(path).stem, "jpg")
                self.made[key] = self._save(Image.fromarray(pixels), name)
        return self.made[key]

    def of_image(self, image: PILImage, stem: str) -> tuple[str, int] | ImageReadError:
        rgb = image.convert("RGB")
        key = "pixels:" + hashlib.sha1(repr(rgb.size).encode() + rgb.tobytes()).hexdigest()
        if key not in self.made:
            self.made[key] = self._save(rgb, _hashed(key.encode(), f"dehazed_{stem}", "png"))
        return self.made[key]

    def _save(self, image: PILImage, name: str) -> tuple[str, int]:
        """Resize to ``height`` keeping the aspect (width at most 8 heights); write atomically
        (JPEG quality 90 for photos, PNG for the network's output)."""
        w, h = image.size
        width = min(max(1, round(w * self.height / h)), 8 * self.height)
        thumb = image.resize((width, self.height), Image.Resampling.LANCZOS)
        options = {"format": "JPEG", "quality": 90} if name.endswith(".jpg") else {"format": "PNG"}
        atomic_write(self.folder / name, lambda handle: thumb.save(handle, **options))
        return name, width


def _hashed(key: bytes, stem: str, ext: str) -> str:
    """``<12 hex of sha1(key)>-<safe stem>.<ext>``: unique per source, safe in any URL."""
    return f"{hashlib.sha1(key).hexdigest()[:12]}-{safe_stem(stem)}.{ext}"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _figure(
    thumb: tuple[str, int] | ImageReadError,
    source: str,
    classes: str,
    lines: list[str],
    attrs: str = "",
) -> str:
    """A framed tile: the thumbnail (or a placeholder naming an unreadable file) and caption
    lines (already escaped HTML). The image's hover text is the full source path."""
    name = os.path.basename(source) or source
    if isinstance(thumb, ImageReadError):
        body = f'<div class="missing" title="{_esc(thumb)}">cannot read {_esc(name)}</div>'
    else:
        src = _esc(f"{IMAGES}/{quote(thumb[0])}")
        body = f'<img src="{src}" alt="{_esc(name)}" width="{thumb[1]}" title="{_esc(source)}">'
    caption = "<br>".join(lines)
    return f'<figure class="{classes}"{attrs}>{body}<figcaption>{caption}</figcaption></figure>'


def _query_cells(row: QueryRow, thumbs: _Thumbnails) -> str:
    lines = [f'<span class="name">{_esc(os.path.basename(row.query))}</span>']
    if row.camera is not None:
        lines.append(f"camera {_esc(row.camera)}")
    extra = [f"haze {row.haze:.3g}"] if row.haze is not None else []
    extra += [f"branch {row.branch}"] if row.branch is not None else []
    if extra:
        lines.append(_esc(" · ".join(extra)))
    cells = f"<td>{_figure(thumbs.of_file(row.query), row.query, 'tile query', lines)}</td>"
    if row.dehazed is None:
        return cells + '<td class="dehazed empty"></td>'
    thumb = thumbs.of_image(row.dehazed, Path(row.query).stem)
    dehazed = _figure(thumb, f"dehazed {os.path.basename(row.query)}", "tile dehazed", [])
    return cells + f'<td class="dehazed">{dehazed}</td>'


def _match_figure(match: Match, thumbs: _Thumbnails) -> str:
    mark = {True: " ✓", False: " ✗", None: ""}[match.correct]
    lines = [_esc(f"#{match.rank}{mark} · d {match.distance:.3g}")]
    if match.camera is not None:
        lines.append(f"camera {_esc(match.camera)}")
    when = time_text(match.timestamp)
    if when is not None:
        lines.append(_esc(when))
    lines.append(f'<span class="name">{_esc(os.path.basename(match.path))}</span>')
    classes = f"tile match {FRAMES[match.correct]}"
    rank = f' data-rank="{int(match.rank)}"'
    return _figure(thumbs.of_file(match.path), match.path, classes, lines, rank)


def _render(rows: Sequence[QueryRow], title: str, thumbs: _Thumbnails, notes: Sequence[str]) -> str:
    """The page's HTML; writes the thumbnails it refers to through ``thumbs``."""
    top_k = max((len(r.matches) for r in rows), default=0)
    body = []
    for row in rows:
        if row.matches:
            tiles = "".join(_match_figure(m, thumbs) for m in row.matches)
        else:
            tiles = f'<div class="nomatch">{_esc(NO_MATCH)}</div>'
        body.append(
            f'<tr class="query-row">{_query_cells(row, thumbs)}'
            f'<td><div class="matches">{tiles}</div></td></tr>'
        )
    css = _CSS.replace("THUMB", str(thumbs.height))
    note_items = "".join(f"<li>{_esc(n)}</li>" for n in notes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{css}</style></head>\n<body>"
        f"<h1>{_esc(title)}</h1>"
        f'<p class="summary">{len(rows)} queries · top {top_k} matches, nearest first</p>'
        + (f'<ul class="notes">{note_items}</ul>' if notes else "")
        + '<p class="legend"><span class="correct">same identity</span>'
        '<span class="wrong">other identity</span><span class="neutral">identity unknown</span></p>'
        "<table><thead><tr><th>query</th><th>dehazed</th><th>matches</th></tr></thead><tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table></body></html>\n"
    )


def write_results_page(
    out_dir: str | os.PathLike[str],
    rows: Sequence[QueryRow],
    title: str = "rvsl-search results",
    thumb_height: int = 128,
    notes: Sequence[str] = (),
) -> Path:
    """Write ``out_dir/index.html`` and its thumbnails in ``out_dir/images/``; return the page.

    Every file is written atomically: the thumbnails first, then the page, so a reader sees
    the old page or the new one, whole. Thumbnails of an earlier page in the same folder that
    the new one no longer uses are removed afterwards (only files named as this module names
    them). An unreadable source image becomes a visible placeholder naming the file.
    """
    if isinstance(thumb_height, bool) or not isinstance(thumb_height, int) or thumb_height < 1:
        raise ValueError(f"thumb_height must be a positive int, got {thumb_height!r}")
    out_dir = Path(out_dir)
    folder = out_dir / IMAGES
    folder.mkdir(parents=True, exist_ok=True)
    thumbs = _Thumbnails(folder, thumb_height)
    text = _render(rows, title, thumbs, notes)
    page = out_dir / "index.html"
    atomic_write(page, lambda handle: handle.write(text.encode("utf-8", "replace")))
    used = {t[0] for t in thumbs.made.values() if not isinstance(t, ImageReadError)}
    for old in folder.iterdir():
        if THUMB_NAME.match(old.name) and old.name not in used:
            old.unlink(missing_ok=True)
    return page
