"""Which encoder should ``rvsl-search`` embed footage with, when fog comes and goes?

    python scripts/search_branch_choice.py --world data/demo_world \
        --checkpoints outputs/demo_seeds/final/seed_*/real_haze/checkpoints/last.ckpt

Two steps, kept apart so that nothing is tuned on a test set:

1. **The haze threshold** of ``--branch auto`` is chosen on TRAINING images only: the demo
   world's real clear (``FVRID_clear/train_clear``) and real hazy (``FVRID_real/train_foggy``)
   training images; the threshold with the fewest misclassified images (ties: the midpoint).
2. **The mixed test gallery**: the demo world's real test shots (the same scenes exist clear
   in ``FVRID_clear`` and hazy in ``FVRID_real``); each query and each gallery shot is taken
   from ONE of the two, by a fixed coin (the low bit of a hash of its file name), so the
   gallery mixes clear and hazy images and no scene appears twice. Each branch choice
   (hazy, clear, auto, fuse) embeds it through :class:`rvsl.search.embedding.Embedder`, the
   code ``rvsl-search index`` runs, and is ranked with the package's ReID protocol (Euclidean
   distance, same identity on the same camera left out): mAP and rank-1, per checkpoint, then
   mean ± sample std over checkpoints (seeds).

Writes ``OUT/branch_choice.json`` and ``OUT/branch_choice.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path

import torch

from rvsl.data.transforms import build_eval_transform, load_image
from rvsl.inference.haze import BRANCH_CHOICES, DEFAULT_HAZE_THRESHOLD, haze_score
from rvsl.metrics.distance import pairwise_distance
from rvsl.metrics.rank import evaluate_rank
from rvsl.search.embedding import Embedder, EmbedOptions
from rvsl.search.files import find_images, labels_from_path
from rvsl.utils.files import atomic_write


def haze_scores(paths: list[str], size: tuple[int, int]) -> torch.Tensor:
    transform = build_eval_transform(size)
    images = torch.stack([transform(load_image(p)) for p in paths])
    return haze_score(images)


def pick_threshold(clear: torch.Tensor, hazy: torch.Tensor) -> tuple[float, float]:
    """The threshold with the fewest errors (clear scored above it, hazy at or below it): the
    middle of the first interval of scores where the fewest are made; and its error rate."""
    candidates = torch.cat([clear, hazy]).sort().values
    errors = torch.stack([(clear > t).sum() + (hazy <= t).sum() for t in candidates])
    best = errors == errors.min()
    start = int(torch.nonzero(best)[0])
    end = start
    while end + 1 < len(best) and best[end + 1]:
        end += 1  # every threshold from candidates[start] up to candidates[end + 1] ties
    high = candidates[min(end + 1, len(candidates) - 1)]
    return float((candidates[start] + high) / 2), float(errors.min()) / (len(clear) + len(hazy))


def coin(path: str) -> int:
    return hashlib.blake2b(Path(path).name.encode(), digest_size=1).digest()[0] & 1


def mixed_split(world: Path, split: str) -> tuple[list[str], list[bool]]:
    """One file per shot of ``split`` (query or gallery): clear or hazy by the coin."""
    clear = {Path(p).name: p for p in find_images([world / "FVRID_clear" / f"{split}_clear"])}
    hazy = {Path(p).name: p for p in find_images([world / "FVRID_real" / f"{split}_foggy"])}
    names = sorted(clear.keys() & hazy.keys())
    chosen = [hazy[n] if coin(n) else clear[n] for n in names]
    return chosen, [bool(coin(n)) for n in names]


def rank_mixed(features: torch.Tensor, paths: list[str], num_query: int) -> dict[str, float]:
    labels = [labels_from_path(p) for p in paths]
    pids = torch.tensor([int(i) for _, i in labels])
    cams = torch.tensor([int(c[1:]) for c, _ in labels])
    q, g = slice(0, num_query), slice(num_query, None)
    dist = pairwise_distance(features[q], features[g])
    result = evaluate_rank(dist, pids[q], pids[g], cams[q], cams[g], max_rank=50)
    return {"mAP": float(result["mAP"]), "rank1": float(result["cmc"][0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True, help="the demo world's folder")
    parser.add_argument("--checkpoints", nargs="+", required=True, help="one per seed")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    size = tuple(json.loads((args.world / "world.json").read_text())["size"])
    clear_train = find_images([args.world / "FVRID_clear" / "train_clear"])
    hazy_train = find_images([args.world / "FVRID_real" / "train_foggy"])
    threshold, error = pick_threshold(haze_scores(clear_train, size), haze_scores(hazy_train, size))
    print(
        f"haze threshold on training images: {threshold:.3f} ({error:.1%} misclassified; "
        f"the package's default is {DEFAULT_HAZE_THRESHOLD})"
    )

    queries, query_hazy = mixed_split(args.world, "query")
    gallery, gallery_hazy = mixed_split(args.world, "gallery")
    paths = queries + gallery
    truly_hazy = torch.tensor(query_hazy + gallery_hazy)
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in BRANCH_CHOICES}
    auto_accuracy = []
    for checkpoint in args.checkpoints:
        for choice in BRANCH_CHOICES:
            options = EmbedOptions(
                branch=choice,
                haze_threshold=threshold,
                device="cpu",
                workers=args.workers,
                progress=False,
            )
            out = Embedder(checkpoint, options).embed(paths)
            assert out is not None and bool(out["valid"].all())
            runs[choice].append(rank_mixed(out["feature"], paths, len(queries)))
            if choice == "auto":
                said_hazy = torch.tensor([b == "hazy" for b in out["branch"]])
                auto_accuracy.append(float((said_hazy == truly_hazy).float().mean()))
            print(checkpoint, choice, runs[choice][-1], flush=True)

    def summary(values: list[float]) -> dict[str, float]:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": statistics.fmean(values), "std": std}

    table = {
        c: {m: summary([r[m] for r in rs]) for m in ("mAP", "rank1")} for c, rs in runs.items()
    }
    result = {
        "command": " ".join(sys.argv),
        "threshold": threshold,
        "threshold_training_error": error,
        "queries": len(queries),
        "gallery": len(gallery),
        "hazy_share": float(truly_hazy.float().mean()),
        "auto_picks_the_true_condition": auto_accuracy,
        "checkpoints": args.checkpoints,
        "per_checkpoint": runs,
        "summary": table,
    }
    lines = [
        f"Mixed demo gallery: {len(queries)} queries, {len(gallery)} gallery images, "
        f"{result['hazy_share']:.0%} hazy; {len(args.checkpoints)} checkpoints (seeds).",
        f"Haze threshold {threshold:.3f}, chosen on training images ({error:.1%} wrong there); "
        f"on this test set auto sends {statistics.fmean(auto_accuracy):.1%} of images to the "
        "encoder of their true condition.",
        "",
        "| branch | mAP (%) | rank-1 (%) |",
        "|---|---:|---:|",
    ]
    for choice, metrics in table.items():
        cells = " | ".join(
            f"{100 * metrics[m]['mean']:.2f} ± {100 * metrics[m]['std']:.2f}"
            for m in ("mAP", "rank1")
        )
        lines.append(f"| {choice} | {cells} |")
    args.out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    atomic_write(args.out / "branch_choice.md", lambda h: h.write(text.encode()))
    atomic_write(
        args.out / "branch_choice.json", lambda h: h.write(json.dumps(result, indent=2).encode())
    )
    print(text)


if __name__ == "__main__":
    main()
