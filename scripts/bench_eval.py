"""Time ``rvsl.metrics.evaluate_rank`` against a plain per-query loop of the same protocol.

Random identities with feature clusters give a realistic float32 distance matrix (squared
Euclidean, exact ties included). Both paths must agree; the table gives seconds, the speed-up
and the extra memory of the fast path.

    python scripts/bench_eval.py --num-query 2000 --num-gallery 20000
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
import torch

from rvsl.metrics import evaluate_rank, pairwise_distance


def loop_evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The protocol written the plain way: one stable sort and one pass per query."""
    cmcs, aps, inps = [], [], []
    for q in range(len(q_pids)):
        order = np.argsort(distmat[q], kind="stable")
        matches = g_pids[order] == q_pids[q]
        removed = matches & (g_camids[order] == q_camids[q])
        hits = matches[~removed]
        if not hits.any():
            continue
        positions = np.flatnonzero(hits)
        found = np.cumsum(hits)
        cmc = np.ones(max_rank)
        cmc[: min(max_rank, len(found))] = np.minimum(found[:max_rank], 1)
        cmcs.append(cmc)
        aps.append(np.mean(found[positions] / (positions + 1)))
        inps.append(len(positions) / (positions[-1] + 1))
    return {
        "cmc": np.mean(cmcs, axis=0),
        "mAP": float(np.mean(aps)),
        "mINP": float(np.mean(inps)),
        "num_valid_queries": len(aps),
    }


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


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def rss_mib(field: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in MiB (Linux only)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_growth_mib(fn, *args, **kwargs) -> float:
    """Peak resident memory of ``fn(*args)`` above the resident memory before the call.

    Resets the kernel's peak counter first (``/proc/self/clear_refs``, Linux >= 4.0); elsewhere
    falls back to ``ru_maxrss``, which only shows growth past the earlier peak of the process.
    """
    before = rss_mib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        before = None
    if before is None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        fn(*args, **kwargs)
        return max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
    fn(*args, **kwargs)
    return max(0.0, rss_mib("VmHWM") - before)


def main() -> None:
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
    args = parser.parse_args()

    split = make_split(args)
    distmat = split[0]
    print(
        f"{args.num_query} queries x {args.num_gallery} gallery, {args.num_ids} ids, "
        f"{args.num_cams} cameras; distmat {distmat.nbytes / 2**20:.0f} MiB float32"
    )

    rss_growth = peak_rss_growth_mib(evaluate_rank, *split, max_rank=args.max_rank)
    runs = [timed(evaluate_rank, *split, max_rank=args.max_rank) for _ in range(args.repeats)]
    fast, fast_s = runs[0][0], min(seconds for _, seconds in runs)
    tracemalloc.start()
    evaluate_rank(*split, max_rank=args.max_rank)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    loop, loop_s = timed(loop_evaluate_rank, *split, max_rank=args.max_rank)

    assert fast["num_valid_queries"] == loop["num_valid_queries"]
    cmc_diff = float(np.abs(fast["cmc"] - loop["cmc"]).max())
    map_diff = abs(fast["mAP"] - loop["mAP"])
    inp_diff = abs(fast["mINP"] - loop["mINP"])
    assert max(cmc_diff, map_diff, inp_diff) <= 1e-12, (cmc_diff, map_diff, inp_diff)

    print(f"{'path':<28}{'seconds':>10}{'speed-up':>10}")
    print(f"{'per-query loop':<28}{loop_s:>10.3f}{1.0:>9.1f}x")
    print(
        f"{'evaluate_rank (best of ' + str(args.repeats) + ')':<28}{fast_s:>10.3f}"
        f"{loop_s / fast_s:>9.1f}x"
    )
    print(
        f"identical: valid queries {fast['num_valid_queries']}, mAP {fast['mAP']:.6f}, "
        f"mINP {fast['mINP']:.6f}, rank-1 {fast['cmc'][0]:.6f} "
        f"(max |diff| cmc {cmc_diff:.1e}, mAP {map_diff:.1e}, mINP {inp_diff:.1e})"
    )
    print(
        f"evaluate_rank memory: peak RSS growth {rss_growth:.0f} MiB, tracemalloc peak "
        f"{traced_peak:.0f} MiB (distmat itself: {distmat.nbytes / 2**20:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
