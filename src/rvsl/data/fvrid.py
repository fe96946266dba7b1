"""FVRID folder layout: list split folders, pair synthetic twins, relabel identities.

Layout under a root folder (the authors' FVRID, or the embedded demo world)::

    FVRID_syn/{train,query,gallery}_{clear,foggy}   clear images + synthetic hazy twins
    FVRID_clear/{train,query,gallery}_clear         real clear images
    FVRID_real/{train,query,gallery}_foggy          real hazy images
    FVRID_heldout/{query,gallery}_foggy             optional: a second, held-out real haze

File names start ``<pid>_c<cam>_...``: pid ``-1`` marks a junk image and is skipped; camera ids
are 1-based in names and 0-based here. A synthetic hazy twin has the same file name as its clear
image.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
NAME_PATTERN = re.compile(r"([-\d]+)_c(\d+)")
JUNK_PID = -1

SYN = "FVRID_syn"
REAL_CLEAR_DIR = "FVRID_clear"
REAL_HAZY_DIR = "FVRID_real"
HELDOUT_DIR = "FVRID_heldout"

LAYOUT_HELP = (
    "expected FVRID layout under the data root:\n"
    "  FVRID_syn/{train,query,gallery}_{clear,foggy}  (hazy twins share the clear file names)\n"
    "  FVRID_clear/{train,query,gallery}_clear\n"
    "  FVRID_real/{train,query,gallery}_foggy\n"
    "with file names starting '<pid>_c<cam>_' (pid -1 = junk, cameras numbered from 1)"
)

#: Test set name -> (top folder, query folder, gallery folder).
TEST_SETS: dict[str, tuple[str, str, str]] = {
    "SYN": (SYN, "query_foggy", "gallery_foggy"),
    "REAL_CLEAR": (REAL_CLEAR_DIR, "query_clear", "gallery_clear"),
    "REAL_FOGGY": (REAL_HAZY_DIR, "query_foggy", "gallery_foggy"),
}

#: Optional test sets a data root may hold: evaluated only after fitting, never per epoch.
FINAL_ONLY_TEST_SETS: dict[str, tuple[str, str, str]] = {
    "REAL_HELDOUT": (HELDOUT_DIR, "query_foggy", "gallery_foggy"),
}

#: The validation split carved out of the synthetic training identities (hazy twins).
VAL_SET = "VAL"

#: Real training split per training stage (stage 1 has no real branch).
REAL_TRAIN_SPLITS: dict[int, tuple[str, str]] = {
    2: (REAL_CLEAR_DIR, "train_clear"),
    3: (REAL_HAZY_DIR, "train_foggy"),
}


class FVRIDFormatError(ValueError):
    """A dataset folder holds something that does not follow the FVRID conventions."""


@dataclass(frozen=True)
class ImageRecord:
    """One image: its path, identity label and 0-based camera id."""

    path: Path
    pid: int
    camid: int


@dataclass(frozen=True)
class PairRecord:
    """A clear image and its synthetic hazy twin (same identity and camera)."""

    clear_path: Path
    hazy_path: Path
    pid: int
    camid: int


Record = TypeVar("Record", ImageRecord, PairRecord)


def _list_errors(header: str, names: Sequence[str], limit: int = 20) -> str:
    shown = "\n".join(f"  {n}" for n in names[:limit])
    more = f"\n  ... and {len(names) - limit} more" if len(names) > limit else ""
    return f"{header}\n{shown}{more}"


def parse_name(name: str) -> tuple[int, int]:
    """Return ``(pid, camid)`` from a file name ``<pid>_c<cam>_...``; camid is 0-based.

    Raises FVRIDFormatError naming the file when the name does not follow the pattern.
    """
    match = NAME_PATTERN.match(name)
    if match is None:
        raise FVRIDFormatError(
            f"file name {name!r} does not start with '<pid>_c<cam>' "
            f"(pattern {NAME_PATTERN.pattern})"
        )
    try:
        pid = int(match.group(1))
    except ValueError:
        raise FVRIDFormatError(
            f"file name {name!r}: {match.group(1)!r} is not an integer pid"
        ) from None
    cam = int(match.group(2))
    if pid < JUNK_PID:
        raise FVRIDFormatError(
            f"file name {name!r}: pid {pid} is negative (only -1, junk, is allowed)"
        )
    if cam < 1:
        raise FVRIDFormatError(f"file name {name!r}: camera ids start at 1, got c{cam}")
    return pid, cam - 1


def require_folder(folder: str | Path) -> Path:
    """Return ``folder`` as a Path, or raise FileNotFoundError naming it and the expected layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}\n{LAYOUT_HELP}")
    return folder


def is_dangling_link(path: Path) -> bool:
    """A symbolic link whose target does not exist."""
    return path.is_symlink() and not path.exists()


def listed_file(path: Path) -> bool:
    """A folder entry that counts as a file: a file, or a dangling symbolic link (kept, so that
    reading it fails by name instead of the image vanishing from its split)."""
    return path.is_file() or is_dangling_link(path)


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if listed_file(p) and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _parse_files(files: Sequence[Path], folder: Path) -> list[tuple[Path, int, int]]:
    """Parse every file name, collecting all bad names into one error; drop junk (pid -1)."""
    parsed, bad = [], []
    for path in files:
        try:
            pid, camid = parse_name(path.name)
        except FVRIDFormatError as err:
            bad.append(str(err))
            continue
        if pid != JUNK_PID:
            parsed.append((path, pid, camid))
    if bad:
        raise FVRIDFormatError(_list_errors(f"bad image file names in {folder}:", bad))
    return parsed


def list_images(folder: str | Path) -> list[ImageRecord]:
    """List the images of one split folder, sorted by file name; junk images (pid -1) skipped.

    Files without an image extension (jpg/jpeg/png/bmp) and sub-folders are ignored; a
    dangling symbolic link is listed (it fails when read, naming itself).
    """
    folder = require_folder(folder)
    records = [
        ImageRecord(p, pid, cam) for p, pid, cam in _parse_files(_image_files(folder), folder)
    ]
    if not records:
        raise FVRIDFormatError(f"no usable images in {folder}\n{LAYOUT_HELP}")
    return records


def list_pairs(clear_folder: str | Path, hazy_folder: str | Path) -> list[PairRecord]:
    """Pair each clear image with the hazy image of the same file name, sorted by name.

    Raises FVRIDFormatError naming every clear image without a hazy twin and every hazy image
    without a clear one.
    """
    clear_folder, hazy_folder = require_folder(clear_folder), require_folder(hazy_folder)
    clear = {p.name: p for p in _image_files(clear_folder)}
    hazy = {p.name: p for p in _image_files(hazy_folder)}
    no_hazy = sorted(set(clear) - set(hazy))
    no_clear = sorted(set(hazy) - set(clear))
    if no_hazy or no_clear:
        parts = []
        if no_hazy:
            parts.append(
                _list_errors(f"clear images without a hazy twin in {hazy_folder}:", no_hazy)
            )
        if no_clear:
            parts.append(
                _list_errors(f"hazy images without a clear twin in {clear_folder}:", no_clear)
            )
        raise FVRIDFormatError("\n".join(parts))
    files = [clear[name] for name in sorted(clear)]
    pairs = [
        PairRecord(p, hazy[p.name], pid, cam) for p, pid, cam in _parse_files(files, clear_folder)
    ]
    if not pairs:
        raise FVRIDFormatError(f"no usable image pairs in {clear_folder}\n{LAYOUT_HELP}")
    return pairs


def relabel(records: Sequence[Record]) -> tuple[list[Record], dict[int, int]]:
    """Map pids to contiguous labels 0..N-1 in increasing pid order.

    Returns the relabelled records (order kept) and the ``original pid -> label`` mapping.
    """
    mapping = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    return [dataclasses.replace(r, pid=mapping[r.pid]) for r in records], mapping


def syn_train_pairs(root: str | Path) -> list[PairRecord]:
    """Synthetic training pairs (FVRID_syn/train_clear + train_foggy), pids relabelled 0..N-1."""
    root = Path(root)
    pairs = list_pairs(root / SYN / "train_clear", root / SYN / "train_foggy")
    return relabel(pairs)[0]


def real_train_images(root: str | Path, stage: int) -> list[ImageRecord]:
    """Real training images for stage 2 (FVRID_clear/train_clear) or 3 (FVRID_real/train_foggy).

    Pids are relabelled 0..N-1; they are hidden labels, only for optional PK grouping.
    """
    if stage not in REAL_TRAIN_SPLITS:
        raise ValueError(f"stage {stage} has no real training split; expected one of 2, 3")
    top, split = REAL_TRAIN_SPLITS[stage]
    return relabel(list_images(Path(root) / top / split))[0]


def syn_test_pairs(root: str | Path) -> tuple[list[PairRecord], list[PairRecord]]:
    """Query and gallery pairs of the SYN test set: each hazy test image with its clear twin.

    Same images, order and labels as ``load_test_set(root, "SYN")``: both sort by file name and
    drop junk.
    """
    syn = Path(root) / SYN
    query = list_pairs(syn / "query_clear", syn / "query_foggy")
    return query, list_pairs(syn / "gallery_clear", syn / "gallery_foggy")


def test_set_folders(root: str | Path, name: str) -> tuple[Path, Path]:
    """Query and gallery folders of a test set of :data:`TEST_SETS` or
    :data:`FINAL_ONLY_TEST_SETS`."""
    key = name.upper()
    known = TEST_SETS | FINAL_ONLY_TEST_SETS
    if key not in known:
        raise ValueError(f"unknown test set {name!r}; expected one of {sorted(known)}")
    top, query, gallery = known[key]
    return Path(root) / top / query, Path(root) / top / gallery


def load_test_set(root: str | Path, name: str) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Query and gallery records of a test set: ``SYN``, ``REAL_CLEAR``, ``REAL_FOGGY`` or the
    optional ``REAL_HELDOUT``."""
    query, gallery = test_set_folders(root, name)
    return list_images(query), list_images(gallery)


# ------------------------------------------------------------------ validation split
def multi_camera_pids(records: Sequence[Record]) -> list[int]:
    """Identities seen by at least two cameras, sorted: only they can be cross-camera queries."""
    cameras: dict[int, set[int]] = {}
    for r in records:
        cameras.setdefault(r.pid, set()).add(r.camid)
    return sorted(pid for pid, cams in cameras.items() if len(cams) > 1)


def choose_val_identities(pairs: Sequence[PairRecord], count: int, seed: int) -> list[int]:
    """``count`` identities of the synthetic training pairs to hold out for validation.

    Drawn from the identities seen by two or more cameras, as a permutation of them by
    ``seed`` cut after ``count``: the same root, seed and count give the same identities in
    every stage and run, and a larger count holds out a superset. Returns sorted pids.
    """
    total = len({p.pid for p in pairs})
    candidates = multi_camera_pids(pairs)
    if count >= total:
        raise ValueError(
            f"data.val_identities={count} would hold out all {total} synthetic training "
            "identities, leaving none to train on"
        )
    if count > len(candidates):
        raise ValueError(
            f"data.val_identities={count}: only {len(candidates)} of the {total} synthetic "
            "training identities are seen by two or more cameras, as a validation identity "
            "must be (one camera gives the queries, the others the gallery)"
        )
    order = np.random.default_rng(seed).permutation(len(candidates))
    return sorted(candidates[i] for i in order[:count])


def val_retrieval_set(
    pairs: Sequence[PairRecord],
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Query and gallery of the validation set from held-out pairs: their HAZY twins; per
    identity, the images of its lowest-numbered camera are queries, the others the gallery
    (so every query has a match from another camera). Pids keep their original values."""
    first_camera: dict[int, int] = {}
    for p in pairs:
        first_camera[p.pid] = min(first_camera.get(p.pid, p.camid), p.camid)
    query, gallery = [], []
    for p in pairs:
        record = ImageRecord(p.hazy_path, p.pid, p.camid)
        (query if p.camid == first_camera[p.pid] else gallery).append(record)
    return query, gallery


@dataclass(frozen=True)
class SyntheticSplit:
    """The synthetic training pairs (relabelled 0..N-1) and the held-out validation set."""

    train: list[PairRecord]
    val_query: list[ImageRecord]
    val_gallery: list[ImageRecord]

    @property
    def val_pids(self) -> set[int]:
        """The original pids of the held-out identities."""
        return {r.pid for r in (*self.val_query, *self.val_gallery)}


def split_syn_train(root: str | Path, val_identities: int, seed: int) -> SyntheticSplit:
    """Synthetic training pairs with ``val_identities`` identities held out for validation.

    The held-out identities (:func:`choose_val_identities`) leave training altogether, so the
    classifier has that many fewer classes; their hazy twins form the ``VAL`` retrieval set
    (:func:`val_retrieval_set`). ``val_identities=0``: :func:`syn_train_pairs`, no VAL.
    """
    root = Path(root)
    pairs = list_pairs(root / SYN / "train_clear", root / SYN / "train_foggy")
    held = set(choose_val_identities(pairs, val_identities, seed)) if val_identities else set()
    train = relabel([p for p in pairs if p.pid not in held])[0]
    query, gallery = val_retrieval_set([p for p in pairs if p.pid in held])
    return SyntheticSplit(train, query, gallery)
