"""What ``rvsl-data fog`` may replace, and how its output lands.

``<split>_haze.csv`` records each image's haze and the SHA-256 of the files written; an existing
output file may be replaced (``--overwrite``) only when it is recorded there and unchanged since,
or when it is a byte copy of its clear image. A run writes into a staging folder
(``.rvsl-fog-<pid>-<ns>`` inside the output folder) and :func:`commit` moves the finished files
into place, the parameter file first (written atomically, :func:`rvsl.utils.files.atomic_write`),
so the record never lags the files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from pathlib import Path

from rvsl.data.haze import HazeError
from rvsl.utils.files import atomic_write

CSV_HEADER = ["name", "beta", "airlight", "depth", "foggy_sha256", "clear_sha256"]
STAGE = ".rvsl-fog-"


def shown(items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_replaceable(
    targets: list[tuple[Path, str, Path | None]], params_file: Path, overwrite: bool
) -> dict[str, dict[str, str]]:
    """HazeError (one sentence) when an output exists and ``overwrite`` is off, or when it
    exists and fog did not write it; else the rows of the existing parameter file. Each
    target is (path, csv column of its hash, source whose byte copy it may be)."""
    existing = [str(t) for t, _, _ in targets if t.exists() or t.is_symlink()]
    existing += [str(params_file)] if params_file.exists() else []
    if existing and not overwrite:
        raise HazeError(
            f"{len(existing)} output file(s) already exist, e.g. {shown(existing, 3)}; pass "
            "--overwrite to replace them"
        )
    params = read_params(params_file) if params_file.exists() else {}
    foreign = _not_ours(targets, params) + ([str(params_file)] if params is None else [])
    if foreign:
        raise HazeError(
            f"refusing to replace {len(foreign)} file(s) that rvsl-data fog did not write (or "
            f"that changed since): {shown(foreign, 3)}; move them away or choose another --out"
        )
    return params or {}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_params(path: Path) -> dict[str, dict[str, str]] | None:
    """Rows of a ``<split>_haze.csv`` this tool wrote, by name; None when ``path`` is not one."""
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not rows or rows[0][:4] != CSV_HEADER[:4]:
        return None
    return {r[0]: dict(zip(rows[0], r, strict=False)) for r in rows[1:] if r}


def _not_ours(
    targets: list[tuple[Path, str, Path | None]], params: dict[str, dict[str, str]] | None
) -> list[str]:
    """Existing targets that this tool did not write (or that changed since): each target is
    (path, csv column of its hash, source whose identical copy may be replaced)."""
    foreign = []
    for path, column, source in targets:
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_symlink() or not path.is_file():
            foreign.append(str(path))
            continue
        data = path.read_bytes()
        if source is not None and source.is_file() and source.read_bytes() == data:
            continue  # a byte copy of the clear image: nothing is lost
        row = (params or {}).get(path.name)
        if row is None or (column in row and row[column] != sha256(data)):
            foreign.append(str(path))  # a row without the column: written before hashes
    return foreign


def remove_stale_stages(out: Path) -> None:
    """Staging folders of killed runs (process gone) holding only fog's own output folders."""
    for stage in out.glob(f"{STAGE}*"):
        pid = stage.name[len(STAGE) :].split("-")[0]
        if not pid.isdigit() or stage.is_symlink() or not stage.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
            continue
        except ProcessLookupError:
            pass
        except OSError:
            continue
        own = [
            (s.is_dir() and s.name.endswith(("_clear", "_foggy"))) or s.name.endswith("_haze.csv")
            for s in stage.iterdir()
        ]
        if all(own):
            shutil.rmtree(stage, ignore_errors=True)


def commit(
    stage: Path,
    out: Path,
    params_file: Path,
    old: dict[str, dict[str, str]],
    rows: dict[str, tuple[str, ...]],
    kept: list[tuple[Path, Path | None]],
    prior: str,
) -> None:
    """Write the merged parameter file first (it records what is about to be placed, so a later
    ``--overwrite`` may replace it), then move every finished file from the stage into place."""
    depth_of = {p.name: (d.name if d else prior) for p, d in kept}
    merged = {name: [old[name].get(c, "") for c in CSV_HEADER] for name in old}
    for name, (_, beta, airlight, foggy_sha, clear_sha) in rows.items():
        merged[name] = [name, beta, airlight, depth_of[name], foggy_sha, clear_sha]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(merged[name] for name in sorted(merged))

    data = buf.getvalue().encode("utf-8")
    atomic_write(params_file, lambda handle: handle.write(data))
    for folder in sorted(p for p in stage.iterdir() if p.is_dir()):
        (out / folder.name).mkdir(exist_ok=True)
        for path in sorted(folder.iterdir()):
            os.replace(path, out / folder.name / path.name)
