"""Helpers that write tiny FVRID-layout folders of PNG images for the data tests.

Not a conftest: import it (``from conftest_data import make_fvrid``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (32, 16)  # (H, W) of the written images


def write_image(path: Path, seed: int, size: tuple[int, int] = SIZE) -> Path:
    """A random RGB PNG, values in [16, 255] so a 0 pixel can only come from erasing."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(16, 256, size=(*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_split(
    folder: Path, pids: Sequence[int], per_id: int | Sequence[int], seed: int = 0
) -> list[str]:
    """Write ``per_id`` images for each pid, cameras cycling from c1; return the file names."""
    counts = [per_id] * len(pids) if isinstance(per_id, int) else list(per_id)
    names = []
    for pid, n in zip(pids, counts, strict=True):
        for j in range(n):
            name = f"{pid:04d}_c{j % 3 + 1}_{j:03d}.png" if pid >= 0 else f"-1_c1_{j:03d}.png"
            write_image(folder / name, seed + 1000 * (pid + 2) + j)
            names.append(name)
    return names


def make_fvrid(
    root: Path,
    syn_ids: Sequence[int] = (3, 5, 8, 13, 21, 34),
    syn_per_id: int | Sequence[int] = 4,
    real_clear_ids: Sequence[int] = (100, 101, 102, 103),
    real_hazy_ids: Sequence[int] = (200, 201, 202, 203, 204),
    real_per_id: int = 3,
    test_ids: Sequence[int] = (50, 51, 52),
) -> Path:
    """A complete FVRID tree: synthetic pairs (hazy twin = a darker copy), real clear and hazy."""
    syn = root / "FVRID_syn"
    for split, ids, per_id in (
        ("train", syn_ids, syn_per_id),
        ("query", test_ids, 1),
        ("gallery", test_ids, 3),
    ):
        names = write_split(syn / f"{split}_clear", ids, per_id, seed=len(split))
        for name in names:
            clear = np.asarray(Image.open(syn / f"{split}_clear" / name))
            hazy = (0.6 * clear + 0.4 * 200).astype(np.uint8)
            (syn / f"{split}_foggy").mkdir(parents=True, exist_ok=True)
            Image.fromarray(hazy).save(syn / f"{split}_foggy" / name)
    for top, kind, ids in (
        ("FVRID_clear", "clear", real_clear_ids),
        ("FVRID_real", "foggy", real_hazy_ids),
    ):
        write_split(root / top / f"train_{kind}", ids, real_per_id, seed=7)
        write_split(root / top / f"query_{kind}", test_ids, 1, seed=8)
        write_split(root / top / f"gallery_{kind}", test_ids, 2, seed=9)
    return root
