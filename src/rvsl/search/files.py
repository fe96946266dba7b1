"""Which images a search covers, and what is known about each: camera, time, identity.

Images are found recursively under the folders given (jpg, jpeg, png, bmp, webp; any names).
What is known about an image comes, in order, from a ``--meta`` CSV (``path,camera
[,timestamp][,identity]``; timestamps in seconds or ISO 8601), from its folders (a folder
named ``c3``, ``cam3``, ``camera_3`` is a camera; ``id_17``, ``pid17``, ``vehicle-17`` an
identity) and from an FVRID-style file name (``0801_c2_000.jpg``: identity 0801, camera c2).
Everything is optional: without a camera, ``--exclude-same-camera`` has nothing to exclude;
identities only colour the results page and let ``calibrate`` measure precision.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rvsl.data.fvrid import IMAGE_EXTENSIONS

IMAGE_SUFFIXES = (*IMAGE_EXTENSIONS, ".webp")  # FVRID's image files, and camera exports' webp
_CAMERA_FOLDER = re.compile(r"^(?:c|cam|camera)[_-]?(\d+)$", re.IGNORECASE)
_IDENTITY_FOLDER = re.compile(r"^(?:id|pid|vehicle)[_-]?(\w+)$", re.IGNORECASE)
_FVRID_NAME = re.compile(r"^(\d+)_c(\d+)(?:_|$)", re.IGNORECASE)
META_COLUMNS = ("path", "camera", "timestamp", "identity")


class SearchInputError(ValueError):
    """Images, folders or a metadata file that cannot be used; the message names them."""


@dataclass(frozen=True)
class ImageInfo:
    """One image and what is known about it (None: not known)."""

    path: str  # absolute
    camera: str | None = None
    timestamp: float | None = None
    identity: str | None = None


def find_images(roots: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Absolute paths of every image file under ``roots`` (folders or single files), sorted,
    each once. A root that does not exist is an error; an empty result is the caller's call."""
    found: set[str] = set()
    for root in roots:
        root = Path(root).expanduser()
        if root.is_file():
            found.add(str(root.resolve()))
            continue
        if not root.is_dir():
            raise SearchInputError(f"{root}: no such folder or file")
        for folder, _, names in os.walk(root, followlinks=True):
            found.update(
                str(Path(folder, n).resolve())
                for n in names
                if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith(".")
            )
    return sorted(found)


def labels_from_path(path: str) -> tuple[str | None, str | None]:
    """(camera, identity) read from a path's folders (nearest first) and its file name."""
    camera = identity = None
    for part in reversed(Path(path).parent.parts):
        if camera is None and (match := _CAMERA_FOLDER.match(part)):
            camera = f"c{int(match.group(1))}"
        if identity is None and (match := _IDENTITY_FOLDER.match(part)):
            identity = match.group(1)
    if match := _FVRID_NAME.match(Path(path).name):
        identity = identity or match.group(1)
        camera = camera or f"c{int(match.group(2))}"
    return camera, identity


def read_meta(csv_path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """``--meta`` CSV -> {absolute path: {column: value}}. Paths may be relative to the CSV's
    folder. A missing ``path``/``camera`` column or a named file that does not exist is an
    error that names them (the first few), so a typo does not silently drop labels."""
    csv_path = Path(csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SearchInputError(f"--meta {csv_path}: cannot read it ({err})") from None
    missing = [c for c in ("path", "camera") if c not in columns]
    if missing:
        raise SearchInputError(
            f"--meta {csv_path}: no {' or '.join(missing)} column (it has: "
            f"{', '.join(columns) or 'none'}); expected {','.join(META_COLUMNS)}"
        )
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        path = Path(row["path"]).expanduser()
        path = path if path.is_absolute() else csv_path.parent / path
        table[str(path.resolve())] = row
    absent = [p for p in table if not os.path.exists(p)]
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise SearchInputError(
            f"--meta {csv_path}: {len(absent)} listed file(s) do not exist: "
            f"{', '.join(absent[:3])}{more}"
        )
    return table


def describe(
    paths: Iterable[str], meta: dict[str, dict[str, str]] | None = None
) -> list[ImageInfo]:
    """An :class:`ImageInfo` per path: the CSV's values first, then the folders' and name's."""
    infos = []
    for path in paths:
        camera, identity = labels_from_path(path)
        row = (meta or {}).get(path, {})
        infos.append(
            ImageInfo(
                path=path,
                camera=row.get("camera") or camera,
                timestamp=_timestamp(row.get("timestamp"), path),
                identity=row.get("identity") or identity,
            )
        )
    return infos


def _timestamp(value: str | None, path: str) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise SearchInputError(
            f"--meta: timestamp {value!r} of {path} is neither seconds nor an ISO 8601 time"
        ) from None
