"""Does a "no match" distance calibrated on validation identities hold on the test footage?

    python scripts/search_calibration.py --world data/demo_world --seed 1 \
        --checkpoint outputs/demo_seeds/final/seed_1/real_haze/checkpoints/last.ckpt

Builds, in ``--out``: the run's VAL identities (the held-out synthetic identities of
``data.val_identities`` drawn with ``--seed``, as training held them out) and the mixed clear +
hazy test gallery and queries of ``search_branch_choice.py``, as folders of links; then runs
``rvsl-search index`` (gallery), ``calibrate`` (VAL, ``--exclude-same-camera``) and ``query``
(with and without the threshold) and prints the precision of the top-1 answers.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

from rvsl.data.fvrid import split_syn_train
from search_branch_choice import mixed_split


def links(folder: Path, paths: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = folder / Path(path).name
        if not target.exists():
            os.symlink(path, target)
    return folder


def top1(results: Path) -> dict[str, float]:
    rows = list(csv.DictReader((results / "matches.csv").open()))
    queries = {r["query"] for r in rows}
    answered = [r for r in rows if r["rank"] == "1"]
    right = sum(r["correct"] == "1" for r in answered)
    return {
        "queries": len(queries),
        "answered": len(answered),
        "precision": right / max(1, len(answered)),
        "right_of_all": right / len(queries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (its VAL split)")
    parser.add_argument("--val-identities", type=int, default=50)
    parser.add_argument("--precision", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/calibration"))
    args = parser.parse_args()

    split = split_syn_train(args.world, args.val_identities, args.seed)
    val = links(args.out / "val", [r.path for r in split.val_query + split.val_gallery])
    query = links(args.out / "query", mixed_split(args.world, "query")[0])
    gallery = links(args.out / "gallery", mixed_split(args.world, "gallery")[0])
    index = args.out / "index"

    def search(*argv: object) -> None:
        command = [sys.executable, "-m", "rvsl.cli.search", *map(str, argv), "--quiet"]
        subprocess.run(command, check=True)

    if not (index / "index.json").exists():
        search("index", args.checkpoint, gallery, "--out", index)
    search("calibrate", index, val, "--precision", args.precision, "--exclude-same-camera")
    for name, extra in (("calibrated", []), ("no_threshold", ["--max-distance", "none"])):
        search("query", index, query, "--out", args.out / name, "--exclude-same-camera", *extra)
        print(name, top1(args.out / name))


if __name__ == "__main__":
    main()
