"""Evaluation speed: ranking against a per-query loop, re-ranking, embedding throughput.

1. ``rvsl.metrics.evaluate_rank`` against its per-query specification
   (``rvsl.metrics.rank_reference``) on random identities with feature clusters (a realistic
   float32 squared-Euclidean distance matrix, exact ties included). Both must agree; the
   ratio is the speed-up.
2. k-reciprocal re-ranking at the same size: seconds and peak memory (scripts/bench_rerank.py).
3. Embedding throughput, PyTorch and ONNX Runtime on CPU (scripts/bench_embed.py).

    python scripts/bench_eval.py [--num-query 2000 --num-gallery 20000] [--json out.json]
    python scripts/bench_eval.py --only rank
"""

from __future__ import annotations

import argparse
import json
import tracemalloc
from pathlib import Path

import numpy as np
import torch

import bench_embed  # scripts/ is on sys.path when a script runs
import bench_rerank
from measure import timed, timed_peak_growth
from rvsl.metrics import evaluate_rank, pairwise_distance
from rvsl.metrics.rank_reference import reference_evaluate_rank

SECTIONS = ("rank", "rerank", "embed")


def make_split(args: argparse.Namespace):
    """Query/gallery labels and a float32 distance matrix from clustered random features."""
    gen = torch.Generator().manual_seed(args.seed)
    centers = torch.randn(args.num_ids, args.dim, generator=gen)
    q_pids = torch.randint(args.num_ids, (args.num_query,), generator=gen)
    g_pids = torch.randint(args.num_ids, (args.num_gallery,), generator=gen)
    q_cams = torch.randint(args.num_cams, (args.num_query,), generator=gen)
    g_cams = torch.randint(args.num_cams, (args.num_gallery,), generator=gen)
    q_feat = centers[q_pids] + args.noise * torch.randn(args.num_query, args.dim, generator=gen)
    g_feat = centers[g_pids] + args.noise * torch.randn(args.num_gallery, args.dim, generator=gen)
    distmat = pairwise_distance(q_feat, g_feat).numpy()
    return distmat, q_pids.numpy(), g_pids.numpy(), q_cams.numpy(), g_cams.numpy()


def bench_rank(args: argparse.Namespace) -> dict:
    """Seconds of both paths (best of ``repeats`` for the fast one), their agreement, memory."""
    split = make_split(args)
    distmat = split[0]
    _, _, rss_growth = timed_peak_growth(evaluate_rank, *split, max_rank=args.max_rank)
    runs = [timed(evaluate_rank, *split, max_rank=args.max_rank) for _ in range(args.repeats)]
    fast, fast_s = runs[0][0], min(seconds for _, seconds in runs)
    tracemalloc.start()
    evaluate_rank(*split, max_rank=args.max_rank)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    loop, loop_s = timed(reference_evaluate_rank, *split, max_rank=args.max_rank)

    assert fast["num_valid_queries"] == loop["num_valid_queries"]
    cmc_diff = float(np.abs(fast["cmc"] - loop["cmc"]).max())
    map_diff = abs(fast["mAP"] - loop["mAP"])
    inp_diff = abs(fast["mINP"] - loop["mINP"])
    assert max(cmc_diff, map_diff, inp_diff) <= 1e-12, (cmc_diff, map_diff, inp_diff)
    return {
        "num_query": args.num_query,
        "num_gallery": args.num_gallery,
        "loop_s": loop_s,
        "evaluate_rank_s": fast_s,
        "speedup": loop_s / fast_s,
        "max_abs_diff": max(cmc_diff, map_diff, inp_diff),
        "mAP": fast["mAP"],
        "peak_rss_growth_mib": rss_growth,
        "tracemalloc_peak_mib": traced_peak,
        "distmat_mib": distmat.nbytes / 2**20,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-query", type=int, default=2000)
    parser.add_argument("--num-gallery", type=int, default=20000)
    parser.add_argument("--num-ids", type=int, default=200)
    parser.add_argument("--num-cams", type=int, default=20)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--noise", type=float, default=1.4, help="within-identity feature std")
    parser.add_argument("--repeats", type=int, default=3, help="fast-path timings (best kept)")
    parser.add_argument("--max-rank", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embed-iters", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    figures: dict = {}
    if "rank" in args.only:
        rank = figures["rank"] = bench_rank(args)
        print(f"evaluate_rank, {args.num_query} queries x {args.num_gallery} gallery:")
        print(
            f"  per-query loop {rank['loop_s']:.3f} s, evaluate_rank {rank['evaluate_rank_s']:.3f}"
            f" s (best of {args.repeats}): {rank['speedup']:.1f}x, max |diff| "
            f"{rank['max_abs_diff']:.1e}"
        )
        print(
            f"  memory: peak RSS growth {rank['peak_rss_growth_mib']:.0f} MiB, tracemalloc peak "
            f"{rank['tracemalloc_peak_mib']:.0f} MiB (distmat {rank['distmat_mib']:.0f} MiB)"
        )
    if "rerank" in args.only:
        rerank = figures["rerank"] = bench_rerank.bench(
            args.num_query, args.num_gallery, num_ids=args.num_ids, num_cams=args.num_cams,
            dim=args.dim, noise=args.noise, seed=args.seed,
        )  # fmt: skip
        print(
            f"k-reciprocal re-ranking: {rerank['seconds']:.2f} s, peak RSS growth "
            f"{rerank['peak_rss_growth_mib']:.0f} MiB (dense reference "
            f"{rerank['dense_reference_mib']:.0f} MiB); mAP {100 * rerank['mAP_plain']:.2f} % -> "
            f"{100 * rerank['mAP_reranked']:.2f} %"
        )
    if "embed" in args.only:
        figures["embed"] = []
        for name, (backbone, size, batch) in bench_embed.CONFIGS.items():
            row = bench_embed.bench(backbone, size, batch, iters=args.embed_iters)
            figures["embed"].append({"config": name, **row})
            print(
                f"embedding {name} (batch {batch}): PyTorch {row['torch_images_per_s']:.1f} "
                f"img/s, ONNX Runtime {row['onnxruntime_images_per_s']:.1f} img/s "
                f"(max |diff| {row['max_abs_error']:.1e})"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
