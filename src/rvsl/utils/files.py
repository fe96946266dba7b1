"""Writing files safely: atomically (fsync + rename), and a full disk named in one sentence.

:func:`atomic_write` is the one way this package writes a file a kill must not truncate
(checkpoints, pictures, reports).

The writers wrap their writes in :func:`disk_full_names` so the error names the file they were
writing; :func:`naming_last_good_checkpoint` around a whole run adds the newest checkpoint that
is still whole (writes are atomic, so every ``*.ckpt`` present is), which is where to resume.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

#: errno -> what it means for the user
DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFullError(OSError):
    """A write that failed for lack of space or quota; ``after`` is appended to the message
    (where the last good checkpoint is, once known)."""

    def __init__(self, code: int, path: str | os.PathLike[str] | None) -> None:
        super().__init__(code, DISK_FULL.get(code, os.strerror(code)), str(path or ""))
        self.after = ""

    def __str__(self) -> str:
        where = f"while writing {self.filename}" if self.filename else "while writing a file"
        return f"{self.strerror} {where}" + (f"; {self.after}" if self.after else "")


def _disk_full_in(err: BaseException | None) -> OSError | None:
    """The disk-full error behind ``err``: itself, or one it was raised while handling (a
    logger that fails to write while Lightning cleans up after a failed save)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            return err
        err, seen = err.__context__, seen + 1
    return None


@contextlib.contextmanager
def disk_full_names(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a disk-full OSError raised inside into a :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise DiskFullError(err.errno, path) from err


def newest_checkpoint(folders: Iterable[str | os.PathLike[str]]) -> Path | None:
    """The most recently written ``*.ckpt`` in ``folders`` (temporary files excluded)."""
    found = [
        p
        for folder in folders
        if Path(folder).is_dir()
        for p in Path(folder).glob("*.ckpt")
        if not p.name.startswith(".") and p.is_file()
    ]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


@contextlib.contextmanager
def naming_last_good_checkpoint(folders: Iterable[str | os.PathLike[str]]) -> Iterator[None]:
    """A disk-full error raised inside becomes a :class:`DiskFullError` that also names the
    newest whole checkpoint in ``folders`` (the run's checkpoint folders)."""
    folders = [Path(f) for f in folders]
    try:
        yield
    except Exception as err:
        full = _disk_full_in(err)
        if full is None:
            raise
        code, name = full.errno, full.filename
        error = full if isinstance(full, DiskFullError) else DiskFullError(code, name)
        last = newest_checkpoint(folders)
        error.after = (
            f"the last good checkpoint is {last}"
            if last is not None
            else f"no checkpoint has been written yet (in {', '.join(map(str, folders))})"
        )
        if error is err:
            raise
        raise error from err


_TMP_INFIX = ".tmp-"


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_INFIX}{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of ``path`` left by killed processes (a SIGKILL leaves one behind)."""
    for tmp in path.parent.glob(f".{path.name}{_TMP_INFIX}*"):
        pid = tmp.name.rsplit(_TMP_INFIX, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder (not possible on every OS or filesystem)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """``write(handle)`` to ``.<name>.tmp-<pid>`` in the target's folder, fsync, then rename.

    ``os.replace`` within one folder is atomic on POSIX: readers see the old file or the new
    one, never a partial one. A full disk (or quota) raises ``DiskFullError`` naming
    ``path``; the previous file is kept and the temporary one removed.
    """
    path = Path(path)
    with disk_full_names(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        tmp = _temp_path(path)
        try:
            with open(tmp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _fsync_dir(path.parent)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through :func:`atomic_write`. (Lightning's own save goes through an fsspec
    transaction whose temporary file lives in /tmp, and across filesystems that final move is a
    copy.)"""
    import torch  # here, so that writing a plain file does not load torch

    atomic_write(path, lambda handle: torch.save(obj, handle))
