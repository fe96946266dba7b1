"""``rvsl-data fog``: synthetic hazy twins for a folder of clear images, in the FVRID_syn layout.

Every run writes into a private staging folder beside its outputs and moves the finished files
into place only when every image is done, so an interrupted or failed run leaves the output
folders as they were (a kill during the final moves leaves only complete files); ``--overwrite``
replaces only files an earlier run wrote (:mod:`rvsl.data.fog_outputs`). Unreadable clear
images are skipped and named (``strict`` stops instead); depth maps must have their image's
aspect ratio.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from rvsl.data.fog_outputs import (
    STAGE,
    check_replaceable,
    commit,
    remove_stale_stages,
    sha256,
    shown,
)
from rvsl.data.fvrid import (
    IMAGE_EXTENSIONS,
    FVRIDFormatError,
    is_dangling_link,
    listed_file,
    parse_name,
)
from rvsl.data.haze import (
    DEPTH_PRIORS,
    HazeError,
    HazeSynthesizer,
    depth_shape,
    describe_prior,
    load_depth,
    prior_depth,
    same_aspect,
)

#: Depth-map file extensions looked up for an image stem, in this order.
DEPTH_EXTENSIONS = (".png", ".npy", ".tif", ".tiff")
SPLITS = ("train", "query", "gallery")


@dataclass
class FogSummary:
    """What :func:`fog_folder` wrote, and the unreadable images it skipped (name, reason)."""

    clear_dir: Path
    foggy_dir: Path
    images: int
    copied: int
    depth_source: str
    unparsable_names: list[str] = field(default_factory=list)
    params_file: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _FogTask:
    source: Path
    depth: Path | None
    clear_target: Path | None
    foggy_target: Path
    seed: int
    synth: HazeSynthesizer
    prior: str
    near: float
    far: float


def file_rng(seed: int, name: str) -> np.random.Generator:
    """Generator for one file, from the global seed and the file name (not its position), so the
    result does not depend on the worker count or on which other files are present."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def encode_like(pixels: np.ndarray, suffix: str) -> bytes:
    """Encode uint8 RGB pixels in the format named by a file suffix (PNG, JPEG q95, BMP)."""
    buf = io.BytesIO()
    img = Image.fromarray(pixels)
    suffix = suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        img.save(buf, format="JPEG", quality=95)
    elif suffix == ".bmp":
        img.save(buf, format="BMP")
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def _fog_one(task: _FogTask) -> tuple[str, ...]:
    """Write one hazy twin (and clear copy) into the staging folder; returns
    ``(name, beta, airlight, foggy_sha, clear_sha)``, or ``(name, reason)`` when unreadable."""
    # imported here: torchvision takes seconds to import; the demo world never needs it
    from rvsl.data.transforms import ImageReadError, load_image

    try:
        clear = load_image(task.source).permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    except ImageReadError as err:
        return task.source.name, str(err.__cause__ or err)
    if task.depth is not None:
        depth = load_depth(task.depth, clear.shape[:2])
    else:
        depth = prior_depth(clear, task.prior, task.near, task.far)
    hazy, beta, airlight = task.synth(clear, depth, file_rng(task.seed, task.source.name))
    data = encode_like(np.round(hazy * 255.0).astype(np.uint8), task.source.suffix)
    task.foggy_target.write_bytes(data)
    clear_sha = ""
    if task.clear_target is not None:
        source = task.source.read_bytes()
        task.clear_target.write_bytes(source)
        clear_sha = sha256(source)
    return (
        task.source.name,
        f"{float(beta):.6f}",
        f"{float(airlight):.6f}",
        sha256(data),
        clear_sha,
    )


def _parsable(name: str) -> bool:
    try:
        parse_name(name)
    except FVRIDFormatError:
        return False
    return True


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where available: workers inherit the imported modules and start at once."""
    method = "fork" if sys.platform.startswith("linux") else None
    return multiprocessing.get_context(method)


def _find_depths(sources: list[Path], depth_root: Path | None) -> list[Path | None]:
    """Each image's depth map, HazeError naming the images without one."""
    if depth_root is None:
        return [None] * len(sources)
    depths: list[Path | None] = []
    for p in sources:
        found = [depth_root / f"{p.stem}{ext}" for ext in DEPTH_EXTENSIONS]
        depths.append(next((d for d in found if d.is_file()), None))
    missing = [p.name for p, d in zip(sources, depths, strict=True) if d is None]
    if missing:
        raise HazeError(
            f"no depth map in {depth_root} for {shown(missing, 10)} "
            f"(looked for <stem>{{{','.join(DEPTH_EXTENSIONS)}}}); give every image a depth map "
            "or leave out --depth to use the prior"
        )
    return depths


def _preflight(sources: list[Path], depths: list[Path | None]) -> dict[Path, str]:
    """Read every image header (the unreadable ones are returned, path -> reason) and refuse,
    naming them, depth maps whose aspect ratio differs from their image's."""
    bad: dict[Path, str] = {}
    stretched = []
    for src, depth in zip(sources, depths, strict=True):
        if is_dangling_link(src):
            bad[src] = f"dangling symbolic link to {os.readlink(src)}"
            continue
        try:
            with Image.open(src) as img:
                size = (img.height, img.width)
        except Exception as err:  # PIL raises many types (OSError, SyntaxError, ...)
            bad[src] = f"{type(err).__name__}: {err}"
            continue
        if depth is not None:
            shape = depth_shape(depth)
            if not same_aspect(size, shape):
                stretched.append(
                    f"{depth} ({shape[0]} x {shape[1]}) for {src.name} ({size[0]} x {size[1]})"
                )
    if stretched:
        raise HazeError(
            f"{len(stretched)} depth map(s) do not have their image's aspect ratio and would be "
            f"stretched: {shown(stretched, 3)}; give each image a depth map of its own shape"
        )
    return bad


def _run(tasks: list[_FogTask], workers: int, progress: Callable[[int], None] | None) -> list:
    import rvsl.data.transforms  # noqa: F401  (once here, so forked workers inherit it)

    rows = []
    if workers <= 1 or len(tasks) == 1:
        for task in tasks:
            rows.append(_fog_one(task))
            if progress is not None:
                progress(1)
        return rows
    with _pool_context().Pool(min(workers, len(tasks))) as pool:
        for row in pool.imap(_fog_one, tasks, chunksize=max(1, len(tasks) // (8 * workers))):
            rows.append(row)
            if progress is not None:
                progress(1)
    return rows


def fog_folder(
    clear_dir: str | Path,
    out_dir: str | Path,
    split: str = "train",
    depth_dir: str | Path | None = None,
    synthesizer: HazeSynthesizer | None = None,
    seed: int = 0,
    prior: str = "ground",
    near: float = 0.2,
    far: float = 0.8,
    workers: int = 2,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    strict: bool = False,
) -> FogSummary:
    """Synthesise hazy twins for a folder of clear images, in the FVRID_syn pair layout.

    Writes ``out_dir/<split>_clear/<name>`` (a byte copy of each clear image) and
    ``out_dir/<split>_foggy/<name>`` (its hazy twin, same name and format), plus
    ``out_dir/<split>_haze.csv`` with each image's beta, airlight and the SHA-256 of the files
    written. When ``out_dir/<split>_clear`` is the input folder itself, the clear images are
    already in place and are not copied. Depth comes from
    ``depth_dir/<stem>{.png,.npy,.tif,.tiff}`` when ``depth_dir`` is given (every image needs
    one, of its image's aspect ratio), else from :func:`prior_depth`.

    Refuses (HazeError, nothing written) to write into the input folder or a folder inside it,
    to replace any existing file unless ``overwrite``, and even then files this tool did not
    write. An unreadable clear image is skipped and listed in ``skipped``; with ``strict`` it
    stops the run (HazeError naming it) and nothing is written. Each image's haze depends only
    on ``seed`` and its file name, so any ``workers`` count gives the same bytes. ``progress``
    is called with 1 after each image.
    """
    if split not in SPLITS:
        raise HazeError(f"unknown split {split!r}; expected one of {SPLITS}")
    if prior not in DEPTH_PRIORS:
        raise HazeError(f"unknown depth prior {prior!r}; expected one of {DEPTH_PRIORS}")
    synth = synthesizer or HazeSynthesizer()
    src = Path(clear_dir)
    if not src.is_dir():
        raise HazeError(f"clear image folder not found: {src}")
    src_r, out_r = src.resolve(), Path(out_dir).resolve()
    clear_out, foggy_out = out_r / f"{split}_clear", out_r / f"{split}_foggy"
    if _inside(out_r, src_r):
        raise HazeError(
            f"refusing to write into the input folder: --out {out_dir} is {src} or inside it; "
            "choose an output folder outside the clear images"
        )
    copy_clear = clear_out != src_r
    depth_root = Path(depth_dir) if depth_dir is not None else None
    if depth_root is not None:
        if not depth_root.is_dir():
            raise HazeError(f"depth folder not found: {depth_root}")
        if _inside(foggy_out, depth_root.resolve()) or _inside(clear_out, depth_root.resolve()):
            raise HazeError(f"refusing to write into the depth folder {depth_root}")

    sources = sorted(
        p for p in src.iterdir() if listed_file(p) and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not sources:
        raise HazeError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {src}")
    depths = _find_depths(sources, depth_root)
    bad = _preflight(sources, depths)
    if bad and strict:
        raise HazeError(_unreadable_message([(p.name, r) for p, r in bad.items()], src))
    skipped = [(p.name, bad[p]) for p in sources if p in bad]
    kept = [(p, d) for p, d in zip(sources, depths, strict=True) if p not in bad]
    if not kept:
        raise HazeError(f"no readable images in {src}: {shown([n for n, _ in skipped])}")
    if progress is not None and skipped:
        progress(len(skipped))

    params_file = out_r / f"{split}_haze.csv"
    targets: list[tuple[Path, str, Path | None]] = [
        (foggy_out / p.name, "foggy_sha256", None) for p, _ in kept
    ]
    if copy_clear:
        targets += [(clear_out / p.name, "clear_sha256", p) for p, _ in kept]
    params = check_replaceable(targets, params_file, overwrite)

    created = not out_r.exists()
    out_r.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(out_r)
    stage = out_r / f"{STAGE}{os.getpid()}-{time.time_ns()}"
    try:
        (stage / foggy_out.name).mkdir(parents=True)
        if copy_clear:
            (stage / clear_out.name).mkdir()
        tasks = [
            _FogTask(
                p,
                d,
                stage / clear_out.name / p.name if copy_clear else None,
                stage / foggy_out.name / p.name,
                seed,
                synth,
                prior,
                near,
                far,
            )
            for p, d in kept
        ]
        results = _run(tasks, workers, progress)
        failed = [r for r in results if len(r) == 2]
        if failed and strict:
            raise HazeError(_unreadable_message(failed, src))
        rows = {r[0]: r for r in results if len(r) != 2}
        if not rows:
            raise HazeError(f"no readable images in {src}: {shown([n for n, _ in failed])}")
        commit(stage, out_r, params_file, params, rows, kept, prior)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:  # made by this run: removed again when empty
            with contextlib.suppress(OSError):
                out_r.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)
    skipped += failed
    source_desc = (
        f"depth maps from {depth_root}"
        if depth_root is not None
        else describe_prior(prior, near, far)
    )
    return FogSummary(
        clear_dir=clear_out,
        foggy_dir=foggy_out,
        images=len(rows),
        copied=len(rows) if copy_clear else 0,
        depth_source=source_desc,
        unparsable_names=[p.name for p, _ in kept if p.name in rows and not _parsable(p.name)],
        params_file=params_file,
        skipped=sorted(skipped),
    )


def _unreadable_message(bad: list[tuple[str, str]], src: Path) -> str:
    named = shown([f"{name} ({reason})" for name, reason in sorted(bad)], 3)
    return (
        f"{len(bad)} unreadable image(s) in {src}, nothing written: {named}; without --strict "
        "they are skipped"
    )
