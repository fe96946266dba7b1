"""search your own footage: index folders of vehicle crops, query them, calibrate "no match"

- ``rvsl-search index CHECKPOINT IMAGES... --out INDEX_DIR``: embed every image under the
  folders (recursive; jpg/png/bmp/webp) into an index, or add the new ones to an existing index.
- ``rvsl-search query INDEX_DIR QUERY_IMAGES... --out RESULTS_DIR``: each query's top-K
  matches as ``matches.csv`` and ``index.html`` (a page that opens from disk).
- ``rvsl-search calibrate INDEX_DIR LABELLED_IMAGES... --precision P``: store the distance
  beyond which ``query`` answers "no match", picked on labelled validation images.
- ``rvsl-search info INDEX_DIR``: what an index holds and how it was built.

Exit codes: 0 done; 2 bad input (one ``rvsl-search: ...`` line); 130 interrupted (the index
keeps every image committed before; run the same command again to finish).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

USAGE_ERROR = 2
INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    from rvsl.inference.haze import BRANCH_CHOICES

    parser = argparse.ArgumentParser(
        prog="rvsl-search",
        description="Search your own footage with a trained RVSL network (see docs/search.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def embedding(p: argparse.ArgumentParser, devices: bool = False) -> None:
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        if devices:
            p.add_argument("--devices", type=int, default=1, help="embed on N devices (DDP)")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
        p.add_argument("--meta", type=Path, help="CSV: path,camera[,timestamp][,identity]")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    index = sub.add_parser("index", help="embed images into an index (or add new ones)")
    index.add_argument("checkpoint", type=Path, help="a checkpoint of rvsl-train/rvsl-convert")
    index.add_argument("images", nargs="+", type=Path, help="folders (recursive) or files")
    index.add_argument("--out", required=True, type=Path, help="the index folder")
    index.add_argument(
        "--branch",
        choices=BRANCH_CHOICES,
        help="encoder per image: auto picks by haze score (default for a new index: auto)",
    )
    index.add_argument("--haze-threshold", type=float, help="auto: hazy above this score")
    index.add_argument("--kind", choices=("flat", "ivf", "hnsw"), help="default flat (exact)")
    index.add_argument("--metric", choices=("euclidean", "cosine"), help="default euclidean")
    index.add_argument("--chunk", type=int, default=10_000, help="images per commit")
    index.add_argument("--strict", action="store_true", help="stop at an unreadable image")
    embedding(index, devices=True)

    query = sub.add_parser("query", help="top-K matches of query images")
    query.add_argument("index", type=Path, help="the index folder")
    query.add_argument("images", nargs="+", type=Path, help="query folders or files")
    query.add_argument("--out", required=True, type=Path, help="results folder")
    query.add_argument("--top-k", type=int, default=10)
    query.add_argument("--exclude-same-camera", action="store_true")
    query.add_argument("--time-window", type=float, metavar="SECONDS")
    query.add_argument(
        "--max-distance",
        metavar="D|none",
        help="no match beyond D (default: the calibrated one, if any; none: no threshold)",
    )
    query.add_argument("--checkpoint", help="where the index's checkpoint is now, if moved")
    query.add_argument("--no-dehazed", action="store_true", help="skip the dehazed views")
    embedding(query)

    cal = sub.add_parser("calibrate", help="pick the no-match distance on labelled images")
    cal.add_argument("index", type=Path, help="the index folder")
    cal.add_argument("images", nargs="+", type=Path, help="labelled validation images")
    cal.add_argument("--precision", type=float, default=0.9, help="default 0.9")
    cal.add_argument(
        "--exclude-same-camera",
        action="store_true",
        help="as query --exclude-same-camera: calibrate the way you will query",
    )
    cal.add_argument("--checkpoint", help="where the index's checkpoint is now, if moved")
    embedding(cal)

    info = sub.add_parser("info", help="what an index holds and how it was built")
    info.add_argument("index", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _quiet_lightning()
    from rvsl.models.checkpoint import CheckpointError
    from rvsl.search.build import IndexingInterruptedError
    from rvsl.search.files import SearchInputError
    from rvsl.search.index import SearchIndexError
    from rvsl.search.vectors import VectorIndexError
    from rvsl.utils.files import DiskFullError

    try:
        message = COMMANDS[args.command](args)
    except (SearchInputError, SearchIndexError, VectorIndexError, CheckpointError) as err:
        sys.exit(_say(err, USAGE_ERROR))
    except DiskFullError as err:
        sys.exit(_say(err, USAGE_ERROR))
    except (IndexingInterruptedError, KeyboardInterrupt) as err:
        sys.exit(_say(err or "interrupted", INTERRUPTED))
    if message:
        print(message)


def _quiet_lightning() -> None:
    """Lightning's banners (accelerators found, tips) and a torch-version deprecation notice it
    triggers say nothing to someone searching images; its warnings and errors still show."""
    import pytorch_lightning  # noqa: F401  (its import sets its logger to INFO)

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _say(err: object, code: int) -> int:
    print(f"rvsl-search: {err}", file=sys.stderr)
    return code


def _embed_options(args: argparse.Namespace, **extra: object):
    from rvsl.search.embedding import EmbedOptions

    return EmbedOptions(
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.quiet,
        **extra,
    )


def _index(args: argparse.Namespace) -> str | None:
    from rvsl.search.build import IndexLayout, build_index

    options = _embed_options(
        args, devices=args.devices, branch=args.branch, haze_threshold=args.haze_threshold
    )
    report = build_index(
        args.checkpoint,
        args.images,
        args.out,
        options,
        meta=args.meta,
        layout=IndexLayout(kind=args.kind, metric=args.metric),
        chunk=args.chunk,
        strict=args.strict,
    )
    if report is None:  # a helper rank of a multi-device run
        return None
    lines = [
        f"{report.folder}: {report.total} images ({report.added} added, "
        f"{report.already_indexed} already indexed, {report.duplicates} duplicate content, "
        f"{len(report.unreadable)} unreadable) in {report.seconds:.1f} s"
    ]
    lines += [f"  skipped {path}: {reason}" for path, reason in report.unreadable[:20]]
    if len(report.unreadable) > 20:
        lines.append(f"  ... and {len(report.unreadable) - 20} more")
    return "\n".join(lines)


def _query(args: argparse.Namespace) -> str:
    from rvsl.search.query import QueryOptions, run_query

    limit, ignore = None, False
    if args.max_distance is not None:
        if args.max_distance.lower() == "none":
            ignore = True
        else:
            try:
                limit = float(args.max_distance)
            except ValueError:
                from rvsl.search.files import SearchInputError

                raise SearchInputError("--max-distance takes a number or none") from None
    options = QueryOptions(
        top_k=args.top_k,
        exclude_same_camera=args.exclude_same_camera,
        time_window=args.time_window,
        max_distance=limit,
        ignore_calibration=ignore,
        dehazed=not args.no_dehazed,
    )
    report = run_query(
        args.index,
        args.images,
        args.out,
        options,
        _embed_options(args),
        checkpoint=args.checkpoint,
        meta=args.meta,
    )
    lines = [
        f"{report.queries} queries, {report.with_match} with a match"
        + ("" if report.max_distance is None else f" within distance {report.max_distance:.4g}"),
        f"  {report.csv}",
        f"  {report.page}",
    ]
    lines += [f"  skipped {path}: {reason}" for path, reason in report.unreadable[:20]]
    return "\n".join(lines)


def _calibrate(args: argparse.Namespace) -> str:
    from rvsl.search.calibrate import calibrate

    chosen = calibrate(
        args.index,
        args.images,
        args.precision,
        _embed_options(args),
        meta=args.meta,
        checkpoint=args.checkpoint,
        exclude_same_camera=args.exclude_same_camera,
    )
    return (
        f"max distance {chosen['value']:.4g}: precision {chosen['precision']:.1%}, recall "
        f"{chosen['recall']:.1%} on {chosen['images']} images of {chosen['identities']} "
        f"identities; stored in {args.index}"
    )


def _info(args: argparse.Namespace) -> str:
    from rvsl.search.index import SearchIndex

    index = SearchIndex.open(args.index)
    return json.dumps(index.manifest | {"images": len(index)}, indent=2)


COMMANDS = {"index": _index, "query": _query, "calibrate": _calibrate, "info": _info}


if __name__ == "__main__":
    main()
