"""``rvsl-search index``: embed every image under some folders into an index, or add the
new ones to an existing index.

The work goes in chunks: each chunk is embedded (on every device), then committed
(:meth:`rvsl.search.index.SearchIndex.commit`). A run killed or interrupted mid-way keeps every
chunk committed before; running the same command again skips what is indexed (same path, or
same content under another name) and finishes the job.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rvsl.inference.haze import DEFAULT_BRANCH, DEFAULT_HAZE_THRESHOLD
from rvsl.search.embedding import Embedder, EmbedOptions
from rvsl.search.files import IMAGE_SUFFIXES, SearchInputError, describe, find_images, read_meta
from rvsl.search.index import MANIFEST, Row, SearchIndex, SearchIndexError, file_hash
from rvsl.search.vectors import KINDS, METRICS

STAGING = ".staging"  # the ranks' shards of the chunk being embedded
#: A new index's choices when the command line leaves them out.
DEFAULTS = {
    "branch": DEFAULT_BRANCH,
    "haze_threshold": DEFAULT_HAZE_THRESHOLD,
    "kind": "flat",
    "metric": "euclidean",
}


@dataclass(frozen=True)
class IndexLayout:
    """The vector index: ``kind`` (flat = exact; ivf, hnsw for millions) and ``metric``."""

    kind: str | None = None
    metric: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise SearchInputError(f"--kind must be one of {', '.join(KINDS)}")
        if self.metric is not None and self.metric not in METRICS:
            raise SearchInputError(f"--metric must be one of {', '.join(METRICS)}")


class IndexingInterruptedError(RuntimeError):
    """Ctrl-C (or a signal) during ``index``; the message says what the index holds."""


@dataclass(frozen=True)
class IndexReport:
    """What one ``index`` run did."""

    folder: Path
    found: int  # image files under the folders given
    added: int
    already_indexed: int  # same path
    duplicates: int  # same content as an indexed image, under another path
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    total: int = 0  # images in the index now
    seconds: float = 0.0


def build_index(
    checkpoint: str | os.PathLike[str],
    roots: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    options: EmbedOptions | None = None,
    meta: str | os.PathLike[str] | None = None,
    layout: IndexLayout | None = None,
    chunk: int = 10_000,
    strict: bool = False,
) -> IndexReport | None:
    """Index the images under ``roots`` into ``out`` (see the module docstring). Returns the
    report on rank 0, None on the other ranks of a multi-device run.

    Adding to an existing index: what ``options`` and ``layout`` leave as None (branch, haze
    threshold, kind, metric) is the index's; what they set must equal it."""
    started = time.perf_counter()
    if chunk < 1:
        raise SearchInputError("--chunk must be at least 1")
    paths = find_images(roots)
    if not paths:
        raise SearchInputError(
            f"no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) under "
            f"{', '.join(map(str, roots))}"
        )
    infos = {i.path: i for i in describe(paths, read_meta(meta) if meta else None)}
    checkpoint_hash = file_hash(checkpoint)
    index = _open_existing(Path(out), checkpoint, checkpoint_hash)
    options, layout = _resolve(index, options or EmbedOptions(), layout or IndexLayout())
    embedder = Embedder(checkpoint, options)
    if index is None:
        settings = _settings(checkpoint, checkpoint_hash, embedder, options, layout)
        index = SearchIndex.create(out, settings)
    known_paths, known_hashes = index.known()
    todo = [p for p in paths if p not in known_paths]
    added = duplicates = 0
    unreadable: list[tuple[str, str]] = []
    staging = index.folder / STAGING
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        try:
            result = embedder.embed(part, staging)
        except KeyboardInterrupt:
            raise IndexingInterruptedError(
                f"interrupted: {index.folder} holds {len(index)} images, every one complete; "
                "run the same command again to add the rest"
            ) from None
        if result is None:  # a helper rank: rank 0 commits
            continue
        valid = result["valid"].tolist()
        bad = [(p, e) for p, ok, e in zip(part, valid, result["error"], strict=True) if not ok]
        if bad and strict:
            raise SearchInputError(
                f"--strict: {len(bad)} unreadable image(s), first {bad[0][0]} ({bad[0][1]}); "
                f"{index.folder} holds {len(index)} images, none of this chunk"
            )
        unreadable += bad
        keep, rows = [], []
        for i, path in enumerate(part):
            digest = result["hash"][i]
            if not valid[i]:
                continue
            if digest in known_hashes:
                duplicates += 1
                continue
            known_hashes.add(digest)
            keep.append(i)
            rows.append(Row(infos[path], digest, float(result["haze"][i]), result["branch"][i]))
        index.commit(rows, result["feature"][keep].numpy())
        added += len(rows)
    if not embedder.is_main:
        return None
    shutil.rmtree(staging, ignore_errors=True)
    return IndexReport(
        index.folder,
        found=len(paths),
        added=added,
        already_indexed=len(paths) - len(todo),
        duplicates=duplicates,
        unreadable=unreadable,
        total=len(index),
        seconds=time.perf_counter() - started,
    )


def _open_existing(
    folder: Path, checkpoint: str | os.PathLike[str], checkpoint_hash: str
) -> SearchIndex | None:
    """The index at ``folder`` if there is one, refused if another checkpoint built it."""
    if not (folder / MANIFEST).exists():
        return None
    index = SearchIndex.open(folder)
    recorded = index.manifest["checkpoint"]
    if recorded["sha256"] != checkpoint_hash:
        raise SearchIndexError(
            f"{folder} was built with {recorded['name']} (sha256 {recorded['sha256'][:12]}), "
            f"not {Path(checkpoint).name} (sha256 {checkpoint_hash[:12]}); add to it with the "
            "same checkpoint, or build a new index"
        )
    return index


def _resolve(
    index: SearchIndex | None, options: EmbedOptions, layout: IndexLayout
) -> tuple[EmbedOptions, IndexLayout]:
    """Unset choices filled in: the index's when it exists, else the defaults."""
    asked = {
        "branch": options.branch,
        "haze_threshold": options.haze_threshold,
        "kind": layout.kind,
        "metric": layout.metric,
    }
    if index is None:
        chosen = {k: DEFAULTS[k] if v is None else v for k, v in asked.items()}
    else:
        recorded = {k: index.manifest[k] for k in asked}
        differ = {k: v for k, v in asked.items() if v is not None and v != recorded[k]}
        if differ:
            said = ", ".join(f"{k}={recorded[k]} (asked {v})" for k, v in differ.items())
            raise SearchIndexError(f"{index.folder} was built with {said}; new images must match")
        chosen = recorded
    options = replace(options, branch=chosen["branch"], haze_threshold=chosen["haze_threshold"])
    return options, IndexLayout(kind=chosen["kind"], metric=chosen["metric"])


def _settings(
    checkpoint: str | os.PathLike[str],
    checkpoint_hash: str,
    embedder: Embedder,
    options: EmbedOptions,
    layout: IndexLayout,
) -> dict[str, object]:
    reid = embedder.reidentifier
    return {
        "checkpoint": {
            "name": Path(checkpoint).name,
            "path": str(Path(checkpoint).resolve()),
            "sha256": checkpoint_hash,
        },
        "image_size": list(reid.image_size),
        "normalize": reid.normalize_input,
        "feature_dim": reid.feature_dim,
        "branch": options.branch,
        "haze_threshold": options.haze_threshold,
        "kind": layout.kind,
        "metric": layout.metric,
        "max_distance": None,
    }
