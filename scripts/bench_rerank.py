"""Time ``k_reciprocal_rerank`` and measure its peak memory on clustered random features.

Random identity centres plus noise give float32 query/gallery features; the table gives the
re-ranking time, the growth of the process's peak resident memory during the call (the result
matrix included), what the dense reference would hold, and mAP before and after re-ranking.

    python scripts/bench_rerank.py --num-query 2000 --num-gallery 20000
"""

from __future__ import annotations

import argparse

import torch

from measure import timed_peak_growth  # scripts/measure.py
from rvsl.metrics import evaluate_rank, pairwise_distance
from rvsl.metrics.rerank import DEFAULT_CHUNK_SIZE, k_reciprocal_rerank


def make_features(
    num_query: int, num_gallery: int, num_ids: int, num_cams: int, dim: int, noise: float, seed: int
) -> dict[str, torch.Tensor]:
    """Query/gallery float32 features scattered around identity centres, with labels."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_ids, dim, generator=gen)
    q_pids = torch.randint(num_ids, (num_query,), generator=gen)
    g_pids = torch.randint(num_ids, (num_gallery,), generator=gen)
    return {
        "query": centres[q_pids] + noise * torch.randn(num_query, dim, generator=gen),
        "gallery": centres[g_pids] + noise * torch.randn(num_gallery, dim, generator=gen),
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_camids": torch.randint(num_cams, (num_query,), generator=gen),
        "g_camids": torch.randint(num_cams, (num_gallery,), generator=gen),
    }


def bench(
    num_query: int = 2000,
    num_gallery: int = 20000,
    *,
    num_ids: int = 200,
    num_cams: int = 20,
    dim: int = 128,
    noise: float = 1.4,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "euclidean",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    evaluate: bool = True,
) -> dict[str, float]:
    """Re-rank one random split; returns seconds, memory figures (MiB) and, optionally, mAPs
    (fractions; the table prints percent)."""
    data = make_features(num_query, num_gallery, num_ids, num_cams, dim, noise, seed)
    labels = (data["q_pids"], data["g_pids"], data["q_camids"], data["g_camids"])
    reranked, seconds, peak_growth = timed_peak_growth(
        k_reciprocal_rerank,
        data["query"],
        data["gallery"],
        k1,
        k2,
        lambda_value,
        metric=metric,
        chunk_size=chunk_size,
    )
    num = num_query + num_gallery
    square_mib = num * num * 4 / 2**20
    figures = {
        "num_query": num_query,
        "num_gallery": num_gallery,
        "seconds": seconds,
        "peak_rss_growth_mib": peak_growth,
        "result_mib": reranked.numel() * 4 / 2**20,
        # the dense reference holds original_dist, V, V_qe and the int32 initial_rank (N x N)
        "dense_reference_mib": 4 * square_mib,
    }
    if evaluate:
        plain = pairwise_distance(data["query"], data["gallery"], metric)
        figures["mAP_plain"] = evaluate_rank(plain, *labels)["mAP"]
        figures["mAP_reranked"] = evaluate_rank(reranked, *labels)["mAP"]
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-query", type=int, default=2000)
    parser.add_argument("--num-gallery", type=int, default=20000)
    parser.add_argument("--num-ids", type=int, default=200)
    parser.add_argument("--num-cams", type=int, default=20)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--noise", type=float, default=1.4, help="within-identity feature std")
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--lambda-value", type=float, default=0.3)
    parser.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-eval", action="store_true", help="skip the mAP comparison")
    args = parser.parse_args(argv)

    figures = bench(
        args.num_query,
        args.num_gallery,
        num_ids=args.num_ids,
        num_cams=args.num_cams,
        dim=args.dim,
        noise=args.noise,
        k1=args.k1,
        k2=args.k2,
        lambda_value=args.lambda_value,
        metric=args.metric,
        chunk_size=args.chunk_size,
        seed=args.seed,
        evaluate=not args.no_eval,
    )
    print(
        f"k-reciprocal re-ranking: {args.num_query} queries x {args.num_gallery} gallery, "
        f"{args.dim}-d, {args.num_ids} ids, k1={args.k1} k2={args.k2} "
        f"lambda={args.lambda_value} {args.metric}, chunk_size={args.chunk_size}, "
        f"{torch.get_num_threads()} threads"
    )
    rows = [
        ("time (s)", f"{figures['seconds']:.2f}"),
        ("peak RSS growth (MiB)", f"{figures['peak_rss_growth_mib']:.0f}"),
        ("  of which the result (MiB)", f"{figures['result_mib']:.0f}"),
        ("dense reference, 4 N x N (MiB)", f"{figures['dense_reference_mib']:.0f}"),
    ]
    if "mAP_plain" in figures:
        rows += [
            ("mAP plain (%)", f"{100 * figures['mAP_plain']:.2f}"),
            ("mAP re-ranked (%)", f"{100 * figures['mAP_reranked']:.2f}"),
        ]
    for name, value in rows:
        print(f"{name:<32}{value:>12}")
    return figures


if __name__ == "__main__":
    main()
