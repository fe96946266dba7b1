"""The search index on disk: a folder a user can copy, inspect and grow.

``INDEX_DIR/``
  ``index.json``      what built it (checkpoint name and hash, image size, normalisation,
                      branch choice, haze threshold), the vector index kind and metric, the
                      number of committed images, the vector file, the calibrated threshold
  ``images.sqlite``   one row per image (``row``, ``path``, ``hash``, ``camera``, ``timestamp``,
                      ``identity``, ``haze``, ``branch``): open it with any SQLite tool
  ``vectors-N.faiss`` the FAISS index; vector ``i`` is image row ``i``

A commit writes the new vector file, then the new rows, then ``index.json`` (atomically,
last): until ``index.json`` is replaced, a reader sees the previous index whole, and rows or
files a killed run left behind are ignored and cleaned up by the next commit. So an
interrupted ``rvsl-search index`` loses nothing already indexed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rvsl.search.files import ImageInfo
from rvsl.search.vectors import VectorIndex, VectorIndexError
from rvsl.utils.files import atomic_write

FORMAT = "rvsl-search-index"
VERSION = 1
MANIFEST = "index.json"
TABLE = "images.sqlite"
_SQL_VARIABLES = 900  # row numbers per SELECT (old SQLite builds allow 999 parameters)
_COLUMNS = ("row", "path", "hash", "camera", "timestamp", "identity", "haze", "branch")


class SearchIndexError(ValueError):
    """An index folder that cannot be used as asked; the message names the folder."""


def file_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (checkpoints: which network built an index)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class Row:
    """One indexed image: what :mod:`rvsl.search.files` knows, plus how it was embedded."""

    info: ImageInfo
    hash: str
    haze: float
    branch: str


class SearchIndex:
    """An open index folder: its settings (``manifest``), rows and vectors."""

    def __init__(self, folder: Path, manifest: dict[str, Any], vectors: VectorIndex) -> None:
        self.folder = folder
        self.manifest = manifest
        self.vectors = vectors

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, folder: str | os.PathLike[str], settings: dict[str, Any]) -> SearchIndex:
        """A new, empty index in ``folder`` (created if needed; it must not hold one already)."""
        folder = Path(folder)
        if (folder / MANIFEST).exists():
            raise SearchIndexError(f"{folder}: already holds an index")
        if folder.exists() and any(folder.iterdir()):
            raise SearchIndexError(
                f"{folder}: the folder is not empty and is not an rvsl-search index; "
                "give a new or empty folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
        vectors = VectorIndex.create(
            settings["feature_dim"], kind=settings["kind"], metric=settings["metric"]
        )
        now = time.time()
        manifest = {"format": FORMAT, "version": VERSION, **settings}
        manifest |= {"count": 0, "vectors": None, "created": now, "updated": now}
        index = cls(folder, manifest, vectors)
        with index._connect():
            pass
        index._write_manifest()
        return index

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> SearchIndex:
        """An existing index; a missing, foreign or damaged folder is a one-line error."""
        folder = Path(folder)
        if not folder.is_dir():
            raise SearchIndexError(f"{folder}: no such index folder")
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            raise SearchIndexError(
                f"{folder}: not an rvsl-search index (no {MANIFEST}); build one with "
                "rvsl-search index CHECKPOINT IMAGES... --out FOLDER"
            ) from None
        except (OSError, ValueError) as err:
            raise SearchIndexError(f"{folder}: cannot read {MANIFEST} ({err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise SearchIndexError(f"{folder}: {MANIFEST} is not an rvsl-search index's")
        if manifest.get("version") != VERSION:
            raise SearchIndexError(
                f"{folder}: index format version {manifest.get('version')}; this rvsl reads "
                f"version {VERSION}"
            )
        if manifest["vectors"] is None:
            vectors = VectorIndex.create(
                manifest["feature_dim"], kind=manifest["kind"], metric=manifest["metric"]
            )
        else:
            try:
                vectors = VectorIndex.load(
                    folder / manifest["vectors"], kind=manifest["kind"], metric=manifest["metric"]
                )
            except VectorIndexError as err:
                raise SearchIndexError(f"{folder}: {err}") from None
        if len(vectors) != manifest["count"]:
            raise SearchIndexError(
                f"{folder}: damaged: {MANIFEST} counts {manifest['count']} images but "
                f"{manifest['vectors']} holds {len(vectors)} vectors"
            )
        return cls(folder, manifest, vectors)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return int(self.manifest["count"])

    def rows(self, numbers: np.ndarray | Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Committed rows as dicts (all, or the given row numbers, in that order)."""
        with self._connect() as db:
            if numbers is None:
                found = db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM images WHERE row < ? ORDER BY row",
                    (len(self),),
                ).fetchall()
                return [dict(zip(_COLUMNS, r, strict=True)) for r in found]
            wanted = [int(n) for n in numbers]
            unique = sorted(set(wanted))
            found = []
            for start in range(0, len(unique), _SQL_VARIABLES):  # SQLite's parameter limit
                part = unique[start : start + _SQL_VARIABLES]
                found += db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM images WHERE row < ? AND row IN "
                    f"({', '.join('?' * len(part))})",
                    (len(self), *part),
                ).fetchall()
        by_row = {r[0]: dict(zip(_COLUMNS, r, strict=True)) for r in found}
        return [by_row[n] for n in wanted]

    def column(self, name: str) -> list[Any]:
        """One column of every committed row, in row order (filters read these once)."""
        if name not in _COLUMNS:
            raise ValueError(f"no column {name!r}; the columns are {', '.join(_COLUMNS)}")
        with self._connect() as db:
            found = db.execute(
                f"SELECT {name} FROM images WHERE row < ? ORDER BY row", (len(self),)
            )
            return [value for (value,) in found]

    def known(self) -> tuple[set[str], set[str]]:
        """(paths, content hashes) already committed: what ``index`` skips."""
        with self._connect() as db:
            found = db.execute("SELECT path, hash FROM images WHERE row < ?", (len(self),))
            paths, hashes = set(), set()
            for path, digest in found:
                paths.add(path)
                hashes.add(digest)
        return paths, hashes

    # ------------------------------------------------------------------ writing
    def commit(self, rows: Sequence[Row], features: np.ndarray) -> None:
        """Append ``rows`` and their (N, D) ``features`` (see the module docstring)."""
        if len(rows) != len(features):
            raise ValueError(f"{len(rows)} rows but {len(features)} feature vectors")
        if not rows:
            return
        start = len(self)
        self.vectors.add(np.ascontiguousarray(features, dtype=np.float32))
        name = f"vectors-{int(time.time() * 1e6)}.faiss"
        self.vectors.save(self.folder / name)
        values = [
            (
                start + i,
                r.info.path,
                r.hash,
                r.info.camera,
                r.info.timestamp,
                r.info.identity,
                float(r.haze),
                r.branch,
            )
            for i, r in enumerate(rows)
        ]
        with self._connect() as db:  # one transaction: all rows or none
            db.execute("DELETE FROM images WHERE row >= ?", (start,))
            db.executemany(f"INSERT INTO images VALUES ({', '.join('?' * len(_COLUMNS))})", values)
        self.manifest |= {"count": start + len(rows), "vectors": name, "updated": time.time()}
        self._write_manifest()
        self._remove_stale_vector_files()

    def set(self, **entries: Any) -> None:
        """Record settings in ``index.json`` (e.g. the calibrated ``max_distance``)."""
        self.manifest |= entries
        self._write_manifest()

    # ------------------------------------------------------------------ internals
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """The table, created if new; committed (or rolled back) and closed on exit."""
        db = sqlite3.connect(self.folder / TABLE)
        try:
            with db:
                yield self._ensure_table(db)
        finally:
            db.close()

    @staticmethod
    def _ensure_table(db: sqlite3.Connection) -> sqlite3.Connection:
        db.execute(
            "CREATE TABLE IF NOT EXISTS images (row INTEGER PRIMARY KEY, path TEXT NOT NULL, "
            "hash TEXT NOT NULL, camera TEXT, timestamp REAL, identity TEXT, haze REAL, "
            "branch TEXT)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS images_hash ON images (hash)")
        return db

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=2)
        atomic_write(self.folder / MANIFEST, lambda handle: handle.write(text.encode()))

    def _remove_stale_vector_files(self) -> None:
        for path in self.folder.glob("vectors-*.faiss"):
            if path.name != self.manifest["vectors"]:
                path.unlink(missing_ok=True)
