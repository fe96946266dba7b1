"""``rvsl-convert OFFICIAL.pth OUT.ckpt``: import an official RVSL Stage-1/2/3 checkpoint."""

from __future__ import annotations

import argparse
import sys

from rvsl.models.checkpoint import CheckpointError
from rvsl.models.convert import convert_official_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rvsl-convert",
        description=(
            "Convert an official RVSL checkpoint (the authors' Stage 1, 2 or 3 .pth) into an "
            "rvsl checkpoint usable by rvsl-eval, the inference API and as a training start."
        ),
    )
    parser.add_argument("official", help="the authors' checkpoint file (.pth)")
    parser.add_argument("output", help="where to write the rvsl checkpoint (.ckpt)")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        net = convert_official_checkpoint(args.official, args.output, force=args.force)
    except CheckpointError as err:
        print(f"rvsl-convert: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.output}: backbone {net.backbone}, {net.num_classes} training identities, "
        f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f}M parameters"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
