"""``rvsl-search query``: each query image's nearest indexed images, filtered as asked, written
as ``matches.csv`` and a static ``index.html``.

Filters (all optional): ``exclude_same_camera`` (a re-identification wants another camera's
view; images of unknown camera are kept), ``time_window`` (only images within that many
seconds of the query; when set, images or queries without a time are dropped) and
``max_distance`` (a "no match" answer: nothing farther; the calibrated one the index records
is used unless told otherwise). A query never matches its own file (same content).
The index is searched for more than ``top_k`` neighbours when filters remove some, doubling
until ``top_k`` survive or the index is exhausted.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rvsl.search.embedding import Embedder, EmbedOptions, recorded_embedding
from rvsl.search.files import ImageInfo, SearchInputError, describe, find_images, read_meta
from rvsl.search.index import SearchIndex, SearchIndexError, file_hash
from rvsl.search.page import Match, QueryRow, write_results_page
from rvsl.utils.files import atomic_write

MATCHES_CSV = "matches.csv"
VIEW_SIZE = 256  # the dehazed views kept for the page (pixels, longest side)
CSV_COLUMNS = ("query", "rank", "match", "camera", "timestamp", "distance", "correct")


@dataclass(frozen=True)
class QueryOptions:
    """What counts as a match, and how many to list."""

    top_k: int = 10
    exclude_same_camera: bool = False
    time_window: float | None = None  # seconds
    max_distance: float | None = None  # None: the index's calibrated one, if any
    ignore_calibration: bool = False  # True: no threshold unless max_distance is given
    dehazed: bool = True  # the query's dehazed view on the page

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise SearchInputError("--top-k must be at least 1")
        if self.time_window is not None and self.time_window < 0:
            raise SearchInputError("--time-window must be 0 or more seconds")


@dataclass(frozen=True)
class QueryReport:
    folder: Path
    queries: int
    with_match: int
    unreadable: list[tuple[str, str]]
    max_distance: float | None
    page: Path
    csv: Path


@dataclass(frozen=True)
class Gallery:
    """The index's columns the filters read, loaded once per run."""

    cameras: np.ndarray  # object: str or None
    times: np.ndarray  # float, NaN when unknown
    hashes: np.ndarray  # object: str

    @classmethod
    def of(cls, index: SearchIndex) -> Gallery:
        cameras = np.array(index.column("camera"), dtype=object)
        times = np.array([np.nan if t is None else t for t in index.column("timestamp")], float)
        return cls(cameras, times, np.array(index.column("hash"), dtype=object))


def open_for_query(
    index_dir: str | os.PathLike[str], checkpoint: str | None
) -> tuple[SearchIndex, str]:
    """The index and the checkpoint to embed queries with (the one that built it; another is
    refused by name)."""
    index = SearchIndex.open(index_dir)
    recorded = index.manifest["checkpoint"]
    path = checkpoint or recorded["path"]
    if not Path(path).is_file():
        raise SearchIndexError(
            f"{index.folder} was built with {path}, which is not there any more; pass "
            "--checkpoint with that file's new location"
        )
    if file_hash(path) != recorded["sha256"]:
        raise SearchIndexError(
            f"{index.folder} was built with {recorded['name']} (sha256 "
            f"{recorded['sha256'][:12]}); {Path(path).name} is another network, and its "
            "features cannot be compared with the index's"
        )
    return index, str(path)


def search(
    index: SearchIndex,
    gallery: Gallery,
    features: np.ndarray,
    queries: Sequence[ImageInfo],
    hashes: Sequence[str],
    options: QueryOptions,
    max_distance: float | None,
) -> list[list[tuple[int, float]]]:
    """Per query, up to ``top_k`` (row, distance) pairs that pass the filters, nearest first."""
    total = len(index)
    results: list[list[tuple[int, float]]] = [[] for _ in queries]
    pending = np.arange(len(queries))
    fetch = min(total, options.top_k * 2 + 8)
    while len(pending) and fetch:
        distances, rows = index.vectors.search(features[pending], fetch)
        keep = _passes(
            gallery,
            rows,
            distances,
            [queries[i] for i in pending],
            hashes,
            pending,
            options,
            max_distance,
        )
        unfinished = []
        for slot, query in enumerate(pending):
            chosen = np.flatnonzero(keep[slot])[: options.top_k]
            results[query] = [(int(rows[slot, j]), float(distances[slot, j])) for j in chosen]
            beyond = max_distance is not None and distances[slot, -1] > max_distance
            if len(chosen) < options.top_k and fetch < total and not beyond:
                unfinished.append(query)
        pending = np.array(unfinished, dtype=int)
        fetch = min(total, fetch * 4)
    return results


def _passes(
    gallery: Gallery,
    rows: np.ndarray,
    distances: np.ndarray,
    queries: Sequence[ImageInfo],
    hashes: Sequence[str],
    which: np.ndarray,
    options: QueryOptions,
    max_distance: float | None,
) -> np.ndarray:
    """(Q, K) bool: which of the found rows each query may be matched with."""
    found = rows >= 0
    safe = np.where(found, rows, 0)
    query_hashes = np.array([hashes[i] for i in which], dtype=object)[:, None]
    keep = found & (gallery.hashes[safe] != query_hashes)
    if max_distance is not None:
        keep &= distances <= max_distance
    if options.exclude_same_camera:
        cams = np.array([q.camera for q in queries], dtype=object)[:, None]
        known = (cams != None) & (gallery.cameras[safe] != None)  # noqa: E711 (elementwise)
        keep &= ~(known & (gallery.cameras[safe] == cams))
    if options.time_window is not None:
        times = np.array([np.nan if q.timestamp is None else q.timestamp for q in queries])
        gap = np.abs(gallery.times[safe] - times[:, None])
        keep &= gap <= options.time_window  # NaN (unknown) compares False: dropped
    return keep


def run_query(
    index_dir: str | os.PathLike[str],
    roots: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: QueryOptions | None = None,
    embed: EmbedOptions | None = None,
    checkpoint: str | None = None,
    meta: str | os.PathLike[str] | None = None,
) -> QueryReport:
    """Search the index for every image under ``roots``; write the CSV and the page."""
    options = options or QueryOptions()
    index, checkpoint = open_for_query(index_dir, checkpoint)
    if len(index) == 0:
        raise SearchIndexError(f"{index.folder} holds no images yet")
    paths = find_images(roots)
    if not paths:
        raise SearchInputError(f"no query images under {', '.join(map(str, roots))}")
    manifest = index.manifest
    embed = recorded_embedding(manifest, embed)
    embedder = Embedder(checkpoint, embed)
    out = embedder.embed(paths)
    assert out is not None
    valid = out["valid"].numpy()
    unreadable = [(p, e) for p, ok, e in zip(paths, valid, out["error"], strict=True) if not ok]
    paths = [p for p, ok in zip(paths, valid, strict=True) if ok]
    if not paths:
        raise SearchInputError(f"none of the {len(valid)} query images could be read")
    queries = describe(paths, read_meta(meta) if meta else None)
    limit = _threshold(index, options)
    found = search(
        index,
        Gallery.of(index),
        out["feature"][torch.from_numpy(valid)].numpy(),
        queries,
        [h for h, ok in zip(out["hash"], valid, strict=True) if ok],
        options,
        limit,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _page_rows(index, embedder, queries, found, out, valid, options)
    csv_path = _write_csv(out_dir / MATCHES_CSV, rows)
    notes = [f"index {index.folder} ({len(index)} images, {manifest['branch']} branch)"]
    notes.append("no distance threshold" if limit is None else f"max distance {limit:.4g}")
    page = write_results_page(out_dir, rows, notes=notes)
    return QueryReport(
        out_dir,
        queries=len(queries),
        with_match=sum(bool(f) for f in found),
        unreadable=unreadable,
        max_distance=limit,
        page=page,
        csv=csv_path,
    )


def _threshold(index: SearchIndex, options: QueryOptions) -> float | None:
    if options.max_distance is not None:
        return float(options.max_distance)
    calibrated = index.manifest.get("max_distance")
    if calibrated is None or options.ignore_calibration:
        return None
    return float(calibrated["value"])


def _page_rows(
    index: SearchIndex,
    embedder: Embedder,
    queries: Sequence[ImageInfo],
    found: list[list[tuple[int, float]]],
    out: dict[str, Any],
    valid: np.ndarray,
    options: QueryOptions,
) -> list[QueryRow]:
    dehazed = _dehazed_views(embedder, [q.path for q in queries]) if options.dehazed else None
    haze = out["haze"][torch.from_numpy(valid)].tolist()
    branches = [b for b, ok in zip(out["branch"], valid, strict=True) if ok]
    found_rows = [r for matches in found for r, _ in matches]
    records = dict(zip(found_rows, index.rows(found_rows), strict=True))  # one table read
    rows = []
    for i, (query, matches) in enumerate(zip(queries, found, strict=True)):
        listed = tuple(
            Match(
                path=records[r]["path"],
                rank=rank,
                distance=dist,
                camera=records[r]["camera"],
                timestamp=records[r]["timestamp"],
                correct=None
                if query.identity is None or records[r]["identity"] is None
                else records[r]["identity"] == query.identity,
            )
            for rank, (r, dist) in enumerate(matches, 1)
        )
        picture = dehazed[i] if dehazed is not None else None
        rows.append(QueryRow(query.path, query.camera, picture, listed, haze[i], branches[i]))
    return rows


def _dehazed_views(embedder: Embedder, paths: Sequence[str], batch: int = 32) -> list[Image.Image]:
    """The queries' dehazed views as small pictures, a batch at a time (a thousand full-size
    float images would not fit in memory; the page shows thumbnails anyway)."""
    views = []
    for start in range(0, len(paths), batch):
        for image in embedder.dehaze(paths[start : start + batch]):
            array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            picture = Image.fromarray(array)
            picture.thumbnail((VIEW_SIZE, VIEW_SIZE))
            views.append(picture)
    return views


def _write_csv(path: Path, rows: Sequence[QueryRow]) -> Path:
    """One line per (query, match); a query with no match gets one line with empty fields."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        if not row.matches:
            writer.writerow([row.query, "", "", "", "", "", ""])
        for m in row.matches:
            writer.writerow(
                [
                    row.query,
                    m.rank,
                    m.path,
                    m.camera or "",
                    "" if m.timestamp is None else m.timestamp,
                    f"{m.distance:.6g}",
                    "" if m.correct is None else int(m.correct),
                ]
            )
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))
    return path
