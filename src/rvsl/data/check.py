"""Validate an FVRID-layout dataset before anyone trains on it.

:func:`check_dataset` walks the split folders and reports, one line per problem naming the file
or folder: missing or empty folders, names that do not match ``<pid>_c<cam>_...``, unreadable
or truncated images (dangling symbolic links included), synthetic images without their twin,
training identities with a single image, and query identities with no image in the gallery.
It also tabulates each split (identities, images, cameras). :func:`require_valid_dataset` is
the fast variant training runs before its first step; it raises :class:`DatasetError` listing
the problems, except unreadable images in the folders it is told to tolerate (training skips
those when ``data.strict=false``). Folders outside the FVRID layout (the demo world's
``FVRID_heldout``) are optional: checked when present, required only by an evaluation that
reads them.

Problems make a dataset unusable as it stands. Warnings do not: single-image identities in the
real (unlabelled) training splits, which matter only for the optional PK grouping of real
batches; queries whose only gallery matches share their camera (the protocol skips them); and
non-image files, which the loaders ignore.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from rvsl.data.fvrid import (
    FINAL_ONLY_TEST_SETS,
    IMAGE_EXTENSIONS,
    JUNK_PID,
    REAL_CLEAR_DIR,
    REAL_HAZY_DIR,
    REAL_TRAIN_SPLITS,
    SYN,
    TEST_SETS,
    FVRIDFormatError,
    is_dangling_link,
    listed_file,
    parse_name,
)

#: Every split folder of the FVRID layout, relative to the root, in table order.
LAYOUT_FOLDERS: tuple[str, ...] = (
    *(
        f"{SYN}/{split}_{kind}"
        for split in ("train", "query", "gallery")
        for kind in ("clear", "foggy")
    ),
    *(f"{REAL_CLEAR_DIR}/{split}_clear" for split in ("train", "query", "gallery")),
    *(f"{REAL_HAZY_DIR}/{split}_foggy" for split in ("train", "query", "gallery")),
)
#: Every test set by name: FVRID's and the optional ones a root may hold (the demo world's
#: held-out haze, REAL_HELDOUT, which FVRID does not have).
ALL_TEST_SETS: dict[str, tuple[str, str, str]] = TEST_SETS | FINAL_ONLY_TEST_SETS
#: Split folders of the optional test sets: checked when present, required only by an
#: evaluation that reads them.
OPTIONAL_FOLDERS: tuple[str, ...] = tuple(
    f"{top}/{split}" for top, *splits in FINAL_ONLY_TEST_SETS.values() for split in splits
)
#: Training splits whose labels are used (single-image identities are problems there).
LABELLED_TRAIN = (f"{SYN}/train_clear",)
#: Unlabelled real training splits (single-image identities only warn).
UNLABELLED_TRAIN = (f"{REAL_CLEAR_DIR}/train_clear", f"{REAL_HAZY_DIR}/train_foggy")
_JPEG = (".jpg", ".jpeg")


class DatasetError(FVRIDFormatError):
    """A dataset failed its checks; ``problems`` holds one line per problem, ``report`` the
    whole check (when there is one)."""

    def __init__(
        self, message: str, problems: Sequence[str], report: CheckReport | None = None
    ) -> None:
        super().__init__(message)
        self.problems = list(problems)
        self.report = report


@dataclass(frozen=True)
class SplitStats:
    """One split folder: identities and images (junk excluded), cameras, junk images."""

    folder: str
    identities: int = 0
    images: int = 0
    cameras: int = 0
    junk: int = 0
    missing: bool = False


@dataclass
class CheckReport:
    """The result of :func:`check_dataset`."""

    root: Path
    fast: bool
    splits: list[SplitStats] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: unreadable or truncated image -> its line in ``problems``
    unreadable: dict[Path, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def unreadable_in(self, folders: Iterable[str]) -> list[Path]:
        """The unreadable images inside the split ``folders`` (relative to the root)."""
        dirs = {self.root / rel for rel in folders}
        return [path for path in self.unreadable if path.parent in dirs]

    def table(self) -> str:
        """The per-split table as text."""
        width = max([len("split"), *(len(s.folder) for s in self.splits)])
        lines = [f"{'split':<{width}}  {'ids':>6}  {'images':>7}  {'cams':>4}  {'junk':>5}"]
        for s in self.splits:
            if s.missing:
                lines.append(f"{s.folder:<{width}}  {'missing':>6}")
            else:
                lines.append(
                    f"{s.folder:<{width}}  {s.identities:>6}  {s.images:>7}  {s.cameras:>4}  "
                    f"{s.junk:>5}"
                )
        return "\n".join(lines)


def required_folders(stage: int, test_sets: Iterable[str] = tuple(TEST_SETS)) -> list[str]:
    """Split folders a training stage reads: the synthetic pairs, the stage's real split (2: real
    clear, 3: real hazy) and what evaluating ``test_sets`` reads (:func:`evaluation_folders`:
    SYN's clear twins too, for the dehazer's metrics and ``data.syn_clear_input=clear``)."""
    folders = [f"{SYN}/train_clear", f"{SYN}/train_foggy", *evaluation_folders(test_sets)]
    if stage in REAL_TRAIN_SPLITS:
        folders.append("/".join(REAL_TRAIN_SPLITS[stage]))
    return in_table_order(folders)


def evaluation_folders(test_sets: Iterable[str] = tuple(TEST_SETS)) -> list[str]:
    """Split folders an evaluation reads: query/gallery of ``test_sets`` (FVRID's or an optional
    one, :data:`ALL_TEST_SETS`), plus the clear twins of SYN's hazy images (ground truth of the
    dehazer, input of the clear branch when ``data.syn_clear_input=clear``)."""
    folders = []
    for name in test_sets:
        top, query, gallery = ALL_TEST_SETS[name.upper()]
        folders += [f"{top}/{query}", f"{top}/{gallery}"]
        if top == SYN:
            folders += [f"{SYN}/query_clear", f"{SYN}/gallery_clear"]
    return in_table_order(folders)


def in_table_order(folders: Iterable[str]) -> list[str]:
    """``folders`` without repeats, in the order of the FVRID layout then the optional folders;
    any other folder (a test set added later) keeps its place after them."""
    wanted = list(dict.fromkeys(folders))
    known = (*LAYOUT_FOLDERS, *OPTIONAL_FOLDERS)
    return [f for f in known if f in wanted] + [f for f in wanted if f not in known]


def present_optional_folders(root: str | Path) -> list[str]:
    """The optional split folders (:data:`OPTIONAL_FOLDERS`) that exist under ``root``."""
    return [f for f in OPTIONAL_FOLDERS if (Path(root) / f).is_dir()]


def _dangling(path: Path) -> str | None:
    if is_dangling_link(path):
        return f"dangling symbolic link to {os.readlink(path)} (the target does not exist)"
    return None


def _verify_fast(path: Path) -> str | None:
    """Header-level check: PIL's verify (PNG: every chunk CRC up to IEND) plus, for JPEG, the
    end-of-image marker. Returns a reason or None."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, struct.error, ...)
        return f"unreadable image ({type(err).__name__}: {err})"
    if path.suffix.lower() in _JPEG:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            if b"\xff\xd9" not in fh.read():
                return "truncated JPEG (no end-of-image marker)"
    return None


def _verify_full(path: Path) -> str | None:
    # imported here: torchvision takes seconds to import, and only the full check needs it
    from rvsl.data.transforms import ImageReadError, load_image

    try:
        load_image(path)
    except ImageReadError as err:
        return f"unreadable or truncated image ({err.__cause__ or err})"
    return None


@dataclass
class _Split:
    names: set[str] = field(default_factory=set)  # every image file name
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (pid, camid)
    junk: int = 0


def check_dataset(
    root: str | Path,
    fast: bool = False,
    folders: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check the split ``folders`` under ``root`` (default: the whole FVRID layout, plus the
    optional folders that exist, e.g. the demo world's ``FVRID_heldout``).

    ``fast`` verifies image headers and structure only (PIL ``verify``, JPEG end marker)
    instead of decoding every image. ``progress`` is called with 1 after each file. Problem
    lines start with the path of the file or folder concerned.
    """
    root = Path(root)
    report = CheckReport(root=root, fast=fast)
    if folders is None:
        folders = [*LAYOUT_FOLDERS, *present_optional_folders(root)]
    folders = list(folders)
    if not root.is_dir():
        report.problems.append(f"{root}: dataset root folder not found")
        return report
    verify = _verify_fast if fast else _verify_full
    splits: dict[str, _Split] = {}
    for rel in folders:
        folder = root / rel
        if not folder.is_dir():
            report.problems.append(f"{folder}: missing folder")
            report.splits.append(SplitStats(rel, missing=True))
            continue
        entries = sorted(p for p in folder.iterdir() if listed_file(p))
        images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS]
        split = splits[rel] = _Split(names={p.name for p in images})
        others = [p for p in entries if p not in images and not p.name.startswith(".")]
        if others:
            report.warnings.append(
                f"{folder}: {len(others)} non-image file(s) ignored, e.g. {others[0].name}"
            )
        if not images:
            report.problems.append(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        for path in images:
            try:
                pid, camid = parse_name(path.name)
            except FVRIDFormatError as err:
                report.problems.append(f"{path}: bad file name: {err}")
                pid = camid = None
            reason = _dangling(path) or verify(path)
            if reason is not None:
                report.unreadable[path] = f"{path}: {reason}"
                report.problems.append(report.unreadable[path])
            if pid == JUNK_PID:
                split.junk += 1
            elif pid is not None:
                split.files[path.name] = (pid, camid)
            if progress is not None:
                progress(1)
        report.splits.append(
            SplitStats(
                rel,
                identities=len({pid for pid, _ in split.files.values()}),
                images=len(split.files),
                cameras=len({cam for _, cam in split.files.values()}),
                junk=split.junk,
            )
        )
    _check_twins(root, splits, report)
    _check_singletons(root, splits, report)
    _check_queries(root, splits, report)
    return report


def _check_twins(root: Path, splits: dict[str, _Split], report: CheckReport) -> None:
    for split in ("train", "query", "gallery"):
        clear, foggy = f"{SYN}/{split}_clear", f"{SYN}/{split}_foggy"
        if clear not in splits or foggy not in splits:
            continue
        names_c, names_f = splits[clear].names, splits[foggy].names
        for name in sorted(names_c - names_f):
            report.problems.append(f"{root / clear / name}: no hazy twin in {root / foggy}")
        for name in sorted(names_f - names_c):
            report.problems.append(f"{root / foggy / name}: no clear twin in {root / clear}")


def _check_singletons(root: Path, splits: dict[str, _Split], report: CheckReport) -> None:
    for rel in (*LABELLED_TRAIN, *UNLABELLED_TRAIN):
        if rel not in splits:
            continue
        by_pid: dict[int, list[str]] = defaultdict(list)
        for name, (pid, _) in splits[rel].files.items():
            by_pid[pid].append(name)
        for pid, names in sorted(by_pid.items()):
            if len(names) > 1:
                continue
            line = f"{root / rel / names[0]}: identity {pid} has a single image in this split"
            if rel in LABELLED_TRAIN:
                report.problems.append(f"{line}; a training identity needs at least 2")
            else:
                report.warnings.append(f"{line} (only matters for real_sampling=pk)")


def _check_queries(root: Path, splits: dict[str, _Split], report: CheckReport) -> None:
    for top, query, gallery in dict.fromkeys(ALL_TEST_SETS.values()):
        q_rel, g_rel = f"{top}/{query}", f"{top}/{gallery}"
        if q_rel not in splits or g_rel not in splits:
            continue
        cams: dict[int, Counter] = defaultdict(Counter)
        for pid, cam in splits[g_rel].files.values():
            cams[pid][cam] += 1
        for name, (pid, cam) in sorted(splits[q_rel].files.items()):
            if pid not in cams:
                report.problems.append(
                    f"{root / q_rel / name}: query identity {pid} has no image in {root / g_rel}"
                )
            elif set(cams[pid]) == {cam}:
                report.warnings.append(
                    f"{root / q_rel / name}: identity {pid} appears in {root / g_rel} only from "
                    f"camera c{cam + 1}, the query's own; the protocol skips this query"
                )


def require_valid_dataset(
    root: str | Path,
    folders: Sequence[str] | None = None,
    fast: bool = True,
    tolerate_unreadable: Sequence[str] = (),
) -> CheckReport:
    """Run :func:`check_dataset` (fast by default) and raise DatasetError when it finds problems.

    Training calls this before its first step, with the folders of its stage
    (:func:`required_folders`). Unreadable images inside the ``tolerate_unreadable`` folders
    do not raise: they stay in the report (``unreadable_in``) for the caller to warn about.
    The error lists the first 20 problems.
    """
    report = check_dataset(root, fast=fast, folders=folders)
    tolerated = {report.unreadable[p] for p in report.unreadable_in(tolerate_unreadable)}
    problems = [p for p in report.problems if p not in tolerated]
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = len(problems) - 20
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise DatasetError(
            f"dataset at {root} failed its checks ({len(problems)} problem(s)):\n"
            f"{shown}{tail}\nrun `rvsl-data check {root}` for the full report",
            problems,
            report,
        )
    return report
