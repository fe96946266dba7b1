"""``rvsl-data demo|fog|check``: build the demo world, haze your own images, validate a dataset.

- ``rvsl-data demo [--out DIR] [--seed N] [--size H W]``: build (or reuse) the demo world.
- ``rvsl-data fog --clear DIR --out DIR [--split train] [--depth DIR] ...``: synthetic hazy twins
  for a folder of clear images, written as ``OUT/<split>_clear`` + ``OUT/<split>_foggy`` (point
  ``--out`` at your ``FVRID_syn`` folder).
- ``rvsl-data check ROOT``: per-split table, one line per problem; exit 1 when there are any.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from rvsl.data.check import check_dataset
from rvsl.data.demo_world import DemoWorldError, build_demo_world
from rvsl.data.fog import SPLITS, fog_folder
from rvsl.data.fvrid import IMAGE_EXTENSIONS
from rvsl.data.haze import (
    DEPTH_PRIORS,
    FVRID_AIRLIGHT,
    FVRID_BETA,
    HazeError,
    HazeSynthesizer,
)


def default_demo_dir() -> Path:
    """``$RVSL_DATA_DIR/demo_world``, else ``./data/demo_world`` (the ``data=demo`` config root)."""
    return Path(os.environ.get("RVSL_DATA_DIR", "data")) / "demo_world"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rvsl-data",
        description="Data tools for rvsl: the demo world, haze synthesis, dataset checks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,fog,check}")

    demo = sub.add_parser(
        "demo",
        help="build the embedded demo world (FVRID layout), or reuse it when already built",
        description="Generate the procedural demo world in the FVRID layout. A world with the "
        "same generator version, seed, size and scale is reused, not rebuilt; a folder holding "
        "anything the generator did not write is never rebuilt.",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to build it (default: $RVSL_DATA_DIR/demo_world, else ./data/demo_world)",
    )
    demo.add_argument("--seed", type=int, default=0, help="world seed (default: 0)")
    demo.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(64, 64),
        metavar=("H", "W"),
        help="image size (default: 64 64)",
    )
    demo.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiplies the identity counts (default 1: 360 identities)",
    )
    demo.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    demo.add_argument(
        "--force", action="store_true", help="rebuild even if a matching world exists"
    )

    fog = sub.add_parser(
        "fog",
        help="synthesise hazy twins for your own clear images (atmospheric scattering model)",
        description="I = J t + A (1 - t), t = exp(-beta d), beta and gray A drawn per image. "
        "Writes OUT/<split>_clear (copies) and OUT/<split>_foggy (hazy twins, same names) plus "
        "OUT/<split>_haze.csv; point --out at an FVRID_syn folder. Never writes into the input "
        "folder; never replaces a file unless --overwrite, and then only files it wrote itself. "
        "A failed or interrupted run leaves the output folders as they were. Unreadable images "
        "are skipped and named (--strict stops instead).",
    )
    fog.add_argument("--clear", type=Path, required=True, help="folder of clear images")
    fog.add_argument("--out", type=Path, required=True, help="output folder (e.g. .../FVRID_syn)")
    fog.add_argument(
        "--split",
        choices=SPLITS,
        default="train",
        help="names the output folders <split>_clear and <split>_foggy (default: train)",
    )
    fog.add_argument(
        "--depth",
        type=Path,
        default=None,
        help="depth maps, same stem as each image: PNG 8/16-bit, .npy or TIFF, far = large; "
        "normalised to [0, 1]. Without it the depth prior is used",
    )
    fog.add_argument(
        "--prior",
        choices=DEPTH_PRIORS,
        default="ground",
        help="depth prior when no --depth (default: ground, a ground-plane ramp)",
    )
    fog.add_argument(
        "--prior-range",
        type=float,
        nargs=2,
        default=(0.2, 0.8),
        metavar=("NEAR", "FAR"),
        help="prior depth at the bottom and top rows (default: 0.2 0.8)",
    )
    fog.add_argument(
        "--beta",
        type=float,
        nargs=2,
        default=FVRID_BETA,
        metavar=("LO", "HI"),
        help="scattering coefficient range (default: 1 5, as FVRID)",
    )
    fog.add_argument(
        "--airlight",
        type=float,
        nargs=2,
        default=FVRID_AIRLIGHT,
        metavar=("LO", "HI"),
        help="gray airlight range in [0, 1] (default: 0.4 1.0, as FVRID)",
    )
    fog.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed; each file's haze depends only on it and the file name (default: 0)",
    )
    fog.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    fog.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files that an earlier rvsl-data fog wrote (never others)",
    )
    fog.add_argument(
        "--strict",
        action="store_true",
        help="stop at an unreadable clear image, writing nothing (default: skip and name it)",
    )

    check = sub.add_parser(
        "check",
        help="validate an FVRID-layout dataset; exit 1 listing every problem",
        description="Check folders, file names, image files, synthetic twins, single-image "
        "training identities and query identities missing from the gallery.",
    )
    check.add_argument(
        "root", type=Path, help="dataset root holding FVRID_syn, FVRID_clear, FVRID_real"
    )
    check.add_argument(
        "--fast",
        action="store_true",
        help="verify image headers and structure instead of decoding every image",
    )
    return parser


def _demo(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else default_demo_dir()
    bar: tqdm | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="demo world", unit="id", disable=None)
        bar.update(done - bar.n)

    try:
        summary = build_demo_world(
            out,
            seed=args.seed,
            size=tuple(args.size),
            scale=args.scale,
            workers=args.workers,
            force=args.force,
            progress=progress,
        )
    except DemoWorldError as err:
        print(f"rvsl-data demo: error: {err}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    h, w = summary.size
    what = (
        f"{summary.identities} identities, {summary.images} images of {h}x{w}, "
        f"seed {summary.seed}, generator version {summary.version}"
    )
    if summary.reused:
        print(f"reused the cached demo world at {out}: {what} (--force rebuilds it)")
    else:
        size_mb = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()) / 1e6
        print(f"built the demo world at {out} in {summary.seconds:.1f} s: {what}, {size_mb:.1f} MB")
    width = max(len(k) for k in summary.splits)
    print(f"  {'split':<{width}}  {'ids':>5}  {'images':>6}  {'cams':>4}")
    for folder, row in summary.splits.items():
        print(
            f"  {folder:<{width}}  {row['identities']:>5}  {row['images']:>6}  {row['cameras']:>4}"
        )
    return 0


def _fog(args: argparse.Namespace) -> int:
    try:
        synth = HazeSynthesizer(beta=tuple(args.beta), airlight=tuple(args.airlight))
        n_files = (
            sum(1 for p in args.clear.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if args.clear.is_dir()
            else 0
        )
        with tqdm(total=n_files, desc="fog", unit="img", disable=None) as bar:
            summary = fog_folder(
                args.clear,
                args.out,
                split=args.split,
                depth_dir=args.depth,
                synthesizer=synth,
                seed=args.seed,
                prior=args.prior,
                near=args.prior_range[0],
                far=args.prior_range[1],
                workers=args.workers,
                overwrite=args.overwrite,
                progress=bar.update,
                strict=args.strict,
            )
    except HazeError as err:
        print(f"rvsl-data fog: error: {err}", file=sys.stderr)
        return 2
    print(f"depth: {summary.depth_source}")
    print(
        f"haze: I = J t + A (1 - t), t = exp(-beta d), beta ~ U({synth.beta[0]:g}, "
        f"{synth.beta[1]:g}), gray A ~ U({synth.airlight[0]:g}, {synth.airlight[1]:g}), "
        f"seed {args.seed}"
    )
    copied = f"{summary.copied} clear copies in {summary.clear_dir}, " if summary.copied else ""
    print(
        f"wrote {copied}{summary.images} hazy twins in {summary.foggy_dir}, "
        f"parameters in {summary.params_file}"
    )
    if summary.skipped:
        shown = ", ".join(f"{name} ({reason})" for name, reason in summary.skipped[:5])
        more = f" and {len(summary.skipped) - 5} more" if len(summary.skipped) > 5 else ""
        print(
            f"warning: skipped {len(summary.skipped)} unreadable image(s) in {args.clear}: "
            f"{shown}{more} (--strict stops instead)",
            file=sys.stderr,
        )
    if summary.unparsable_names:
        print(
            f"warning: {len(summary.unparsable_names)} file name(s) do not start with "
            f"'<pid>_c<cam>_' (e.g. {summary.unparsable_names[0]}); rename them before training",
            file=sys.stderr,
        )
    return 0


def _check(args: argparse.Namespace) -> int:
    with tqdm(desc="check", unit="img", disable=None) as bar:
        report = check_dataset(args.root, fast=args.fast, progress=bar.update)
    mode = "fast check: headers only" if args.fast else "full check: every image decoded"
    print(f"dataset {args.root} ({mode})")
    print(report.table())
    for line in report.warnings:
        print(f"warning: {line}")
    for line in report.problems:
        print(line)
    if report.problems:
        print(f"rvsl-data check: {len(report.problems)} problem(s) in {args.root}", file=sys.stderr)
        return 1
    images = sum(s.images + s.junk for s in report.splits)
    print(f"ok: {args.root} passes all checks ({images} images)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"demo": _demo, "fog": _fog, "check": _check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
