"""Vector search for rvsl-search: FAISS flat / IVF / HNSW against brute force in torch and numpy.

For galleries of 10^4, 10^5 and 10^6 float32 vectors of 2048 values (the embedding size of
ResNet-50-IBN-a, the paper's backbone), ``--queries`` (100) queries, k = 10, Euclidean distance:

- ``faiss flat``: ``rvsl.search.vectors.VectorIndex(kind="flat")``, exact;
- ``faiss ivf``: ``kind="ivf"`` with the default ``nprobe``; the gallery is added in chunks,
  so ``nlist=default_nlist(n)`` is given up front (as for one add of the whole gallery);
- ``faiss hnsw``: ``kind="hnsw"``, for galleries up to ``--hnsw-max-size`` (10^5: its build
  takes minutes per 10^5 vectors of 2048 values on two cores, an hour or more at 10^6);
- ``torch``: chunked ``torch.cdist`` + ``topk``; ``numpy``: chunked
  ``|q|^2 - 2 q.g + |g|^2`` + ``argpartition``. No index: the gallery array is all they hold.

Figures: build seconds (the ``add`` calls; generating the data is not counted), ms per query
for one batch of all queries and for a single query (best of three), and peak RSS growth:
each method runs in a process of its own (this script with ``--worker``), whose peak resident
memory (``VmHWM``, reset after the set-up) less its size before the gallery is what the method
costs, a 64 MiB generation chunk included.

Data: gaussian blobs, as an embedding network gives: one centre per 20 vectors (an identity's
images), centres ~ N(0, 1), vectors = centre + 0.5 * N(0, 1); queries are new vectors around
random centres. Uniform noise would have no near neighbours worth finding, and IVF's recall
on it would mean nothing.

Checks (a failure exits non-zero, after writing the report): the torch process also computes
the exact top k in float64; flat's distances must equal it, and equal the float64 distances
of the ids flat returns, within 1e-4 (relative); so must torch's and numpy's. Recall@10 of
IVF and HNSW is measured against flat's ids.

    python scripts/bench_search.py [--sizes 10000 100000 1000000] [--queries 100] [--dim 2048]
        [--hnsw-max-size 100000] [--nlist N] [--nprobe N] [--out FILE.json] [--quick]

``--quick``: sizes 10^3 and 10^4 with ``--nlist 100`` (so IVF trains at 10^4: the default
nlist trains from about 24,300 vectors) and HNSW at 10^3 only: under a minute. The full run
needs about 11 GB of memory at 10^6 (the 8 GB gallery once per process) and takes roughly
15-25 minutes on an idle 2-core machine: IVF's k-means and list assignment at 10^6 (4000
lists) about half of it, HNSW at 10^5 a few minutes. Without ``--out`` the JSON goes to
``outputs/bench/search-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from measure import rss_mib, timed_peak_growth  # scripts/ is on sys.path when a script runs

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
METHODS = ("flat", "torch", "numpy", "ivf", "hnsw")  # torch after flat: it checks flat's ids
LABELS = {
    "flat": "faiss flat",
    "ivf": "faiss ivf",
    "hnsw": "faiss hnsw",
    "torch": "torch cdist",
    "numpy": "numpy matmul",
}
CHUNK = 8192  # gallery rows generated (and brute-forced) at a time: 64 MiB at 2048-d
PER_CLUSTER = 20
NOISE = 0.5
TOLERANCE = 1e-4  # relative, on distances
SCRIPT = Path(__file__).resolve()
HIDDEN = ("worker", "size", "result", "check_ids")  # the worker's own arguments


class SearchCheckError(RuntimeError):
    """A method disagreed with the exact answer, or a worker process failed."""


# ---------------------------------------------------------------------------- data
def _generator(seed: int, *stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class Blobs:
    """Gaussian blobs, generated chunk by chunk, identically in every process."""

    def __init__(self, n: int, dim: int, seed: int) -> None:
        self.n, self.dim, self.seed = n, dim, seed
        self.clusters = max(1, n // PER_CLUSTER)
        self.centres = torch.randn(self.clusters, dim, generator=_generator(seed, 0))

    def _around_centres(self, m: int, gen: torch.Generator) -> np.ndarray:
        labels = torch.randint(self.clusters, (m,), generator=gen)
        return (
            torch.randn(m, self.dim, generator=gen).mul_(NOISE).add_(self.centres[labels]).numpy()
        )

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) of the gallery, CHUNK rows at a time."""
        for i, start in enumerate(range(0, self.n, CHUNK)):
            yield (
                start,
                self._around_centres(min(CHUNK, self.n - start), _generator(self.seed, 1, i)),
            )

    def queries(self, m: int) -> np.ndarray:
        return self._around_centres(m, _generator(self.seed, 2))


# ---------------------------------------------------------------------------- brute force
def torch_knn(queries: np.ndarray, gallery: np.ndarray, k: int, dtype=torch.float32):
    """Chunked ``torch.cdist`` + ``topk``: (distances, ids), nearest first."""
    q = torch.from_numpy(queries).to(dtype)
    best_d = torch.full((len(q), k), float("inf"), dtype=dtype)
    best_i = torch.full((len(q), k), -1, dtype=torch.int64)
    for start in range(0, len(gallery), CHUNK * 8):
        g = torch.from_numpy(gallery[start : start + CHUNK * 8]).to(dtype)
        dist, ids = torch.cdist(q, g).topk(min(k, len(g)), dim=1, largest=False)
        dist, ids = torch.cat([best_d, dist], 1), torch.cat([best_i, ids + start], 1)
        best_d, order = dist.topk(k, dim=1, largest=False)
        best_i = ids.gather(1, order)
    return best_d.numpy(), best_i.numpy()


def numpy_knn(queries: np.ndarray, gallery: np.ndarray, k: int):
    """Chunked squared distances by matrix product + ``argpartition``: (distances, ids)."""
    q_sq = np.einsum("ij,ij->i", queries, queries)[:, None]
    best_sq = np.full((len(queries), k), np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(gallery), CHUNK * 8):
        g = gallery[start : start + CHUNK * 8]
        sq = q_sq - 2 * (queries @ g.T) + np.einsum("ij,ij->i", g, g)[None]
        ids = np.argpartition(sq, min(k, len(g)) - 1, axis=1)[:, :k]
        sq = np.concatenate([best_sq, np.take_along_axis(sq, ids, axis=1)], axis=1)
        ids = np.concatenate([best_i, ids + start], axis=1)
        order = np.argsort(sq, axis=1, kind="stable")[:, :k]
        best_sq, best_i = np.take_along_axis(sq, order, 1), np.take_along_axis(ids, order, 1)
    return np.sqrt(np.maximum(best_sq, 0)), best_i


# ---------------------------------------------------------------------------- one method
def run_method(args: argparse.Namespace, data: Blobs, queries: np.ndarray) -> dict[str, Any]:
    """Build (or hold) the gallery, then search: figures, and the last batch's results."""
    from rvsl.search.vectors import VectorIndex, default_nlist

    row: dict[str, Any] = {}
    if args.worker in ("flat", "ivf", "hnsw"):
        settings = {}
        if args.worker == "ivf":
            settings = {"nlist": args.nlist or default_nlist(data.n), "nprobe": args.nprobe}
        index = VectorIndex.create(data.dim, kind=args.worker, use_gpu=False, **settings)
        build_s = 0.0
        for _, chunk in data.chunks():
            start = time.perf_counter()
            index.add(chunk)
            build_s += time.perf_counter() - start
        row |= {"build_s": build_s, "trained": index.trained}
        row |= {"nlist": index.nlist, "nprobe": index.nprobe} if args.worker == "ivf" else {}

        def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return index.search(q, args.k)
    else:
        gallery = np.empty((data.n, data.dim), dtype=np.float32)
        for start, chunk in data.chunks():
            gallery[start : start + len(chunk)] = chunk
        row["build_s"] = None  # nothing to build: the array is searched as it is
        knn = torch_knn if args.worker == "torch" else numpy_knn

        def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return knn(q, gallery, args.k)

        row["gallery"] = gallery  # for the float64 reference, after the measurements
    singles = []
    for i in range(min(3, len(queries))):  # the first one also warms up
        start = time.perf_counter()
        search(queries[i : i + 1])
        singles.append(time.perf_counter() - start)
    start = time.perf_counter()
    row["distances"], row["ids"] = search(queries)
    row["batch_ms_per_query"] = 1000 * (time.perf_counter() - start) / len(queries)
    row["one_query_ms"] = 1000 * min(singles)
    return row


def worker(args: argparse.Namespace) -> None:
    """One method at one size, in this process; writes ``<result>.json`` and ``<result>.npz``."""
    data = Blobs(args.size, args.dim, args.seed)
    queries = data.queries(args.queries)
    row, seconds, growth = timed_peak_growth(run_method, args, data, queries)
    arrays = {"distances": row.pop("distances"), "ids": row.pop("ids")}
    gallery = row.pop("gallery", None)
    row |= {"wall_s": seconds, "peak_rss_growth_mib": growth, "peak_rss_mib": rss_mib("VmHWM")}
    if args.worker == "torch":  # the exact answer, in float64 (not measured)
        ref_d, ref_i = torch_knn(queries, gallery, args.k, dtype=torch.float64)
        arrays |= {"reference_distances": ref_d, "reference_ids": ref_i}
        if args.check_ids:  # the true distances of the ids flat returned
            ids = np.load(args.check_ids)["ids"]
            rows = gallery[np.maximum(ids, 0)].astype(np.float64)
            pairs = np.linalg.norm(rows - queries[:, None].astype(np.float64), axis=2)
            arrays["flat_pair_distances"] = np.where(ids >= 0, pairs, np.inf)
    np.savez(args.result + ".npz", **arrays)
    Path(args.result + ".json").write_text(json.dumps(row))


def run_worker(method: str, n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``python bench_search.py --worker METHOD``: its figures, plus its arrays as ``arrays``."""
    result = work / f"{method}-{n}"
    command = [
        sys.executable, str(SCRIPT), "--worker", method, "--size", str(n),
        "--dim", str(args.dim), "--queries", str(args.queries), "--k", str(args.k),
        "--seed", str(args.seed), "--result", str(result),
    ]  # fmt: skip
    command += ["--nlist", str(args.nlist)] if args.nlist else []
    command += ["--nprobe", str(args.nprobe)] if args.nprobe else []
    flat = work / f"flat-{n}.npz"
    command += ["--check-ids", str(flat)] if method == "torch" and flat.is_file() else []
    print(f"  {LABELS[method]} ...", end=" ", flush=True)
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0 or not result.with_suffix(".json").is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SearchCheckError(f"{method} at {n} exited with {done.returncode}: {' | '.join(tail)}")
    row = json.loads(Path(f"{result}.json").read_text())
    with np.load(f"{result}.npz") as arrays:
        row["arrays"] = dict(arrays)
    print(f"{row['wall_s']:.1f} s", flush=True)
    return row


# ---------------------------------------------------------------------------- checks
def distance_error(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Max absolute and relative difference of two distance arrays (inf = inf agrees)."""
    if (np.isfinite(truth) != np.isfinite(found)).any():
        return {"max_abs_diff": float("inf"), "max_rel_diff": float("inf")}
    both = np.isfinite(truth)
    diff = np.abs(found[both].astype(np.float64) - truth[both])
    rel = diff / np.maximum(np.abs(truth[both]), 1e-6)
    return {"max_abs_diff": float(diff.max(initial=0)), "max_rel_diff": float(rel.max(initial=0))}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true neighbours (``truth`` ids) that ``found`` holds."""
    valid = truth >= 0
    found_it = (truth[:, :, None] == found[:, None, :]).any(axis=2)
    return float((found_it & valid).sum() / max(valid.sum(), 1))


def check_size(rows: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Agreement of each method with the float64 brute force; recall of the approximate ones."""
    checks: dict[str, Any] = {}
    failures: list[str] = []
    reference = rows.get("torch", {}).get("arrays", {})
    truth_d, truth_i = reference.get("reference_distances"), reference.get("reference_ids")
    for method in ("flat", "torch", "numpy"):
        if method not in rows or truth_d is None:
            continue
        arrays = rows[method]["arrays"]
        error = distance_error(arrays["distances"], truth_d)
        error["same_ids"] = float((arrays["ids"] == truth_i).mean())  # < 1 only for near-ties
        checks[method] = error
        if not error["max_rel_diff"] <= TOLERANCE:
            failures.append(
                f"{LABELS[method]}: distances differ from the float64 brute force by "
                f"{error['max_rel_diff']:.1e} (relative) > {TOLERANCE:.0e}"
            )
    if "flat" in rows and "flat_pair_distances" in reference:
        error = distance_error(
            rows["flat"]["arrays"]["distances"], reference["flat_pair_distances"]
        )
        checks["flat_own_ids"] = error
        if not error["max_rel_diff"] <= TOLERANCE:
            failures.append(
                f"faiss flat: its distances are not the true distances of the ids it returns "
                f"({error['max_rel_diff']:.1e} relative)"
            )
    for method in ("ivf", "hnsw"):
        if method in rows and "flat" in rows:
            rows[method]["recall_at_k"] = recall(
                rows[method]["arrays"]["ids"], rows["flat"]["arrays"]["ids"]
            )
    return checks, failures


# ---------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"## Vector search: {s['dim']}-d float32, {s['queries']} queries, k={s['k']}, Euclidean",
        "",
        f"{report['data']}. {report['machine']['cpu']}, {report['machine']['cpu_count']} cores, "
        f"threads: {report['threads']}; CPU only.",
        "",
        "| gallery | method | build (s) | ms/query, batch | ms, 1 query | peak RSS growth (MiB) "
        f"| recall@{s['k']} vs flat |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for size in report["sizes"]:
        n = size["n"]
        first = f"{n:,} ({n * s['dim'] * 4 / 2**20:,.0f} MiB)"
        for row in size["rows"]:
            build = "-" if row["build_s"] is None else f"{row['build_s']:.2f}"
            method = LABELS[row["method"]]
            if row["method"] == "ivf":
                method += (
                    f" (nlist {row['nlist']}, nprobe {row['nprobe']})"
                    if row["trained"]
                    else " (untrained: exact)"
                )
            exact = "exact" if row["method"] in ("flat", "torch", "numpy") else None
            rec = exact or f"{row['recall_at_k']:.3f}"
            lines.append(
                f"| {first} | {method} | {build} | {row['batch_ms_per_query']:.2f} | "
                f"{row['one_query_ms']:.1f} | {row['peak_rss_growth_mib']:,.0f} | {rec} |"
            )
            first = ""
        for method, check in size["checks"].items():
            name = "faiss flat, its own ids" if method == "flat_own_ids" else LABELS[method]
            same = f", same ids {100 * check['same_ids']:.1f}%" if "same_ids" in check else ""
            lines.append(
                f"|  | check: {name} vs float64 brute force | | | | | max abs diff "
                f"{check['max_abs_diff']:.1e}, rel {check['max_rel_diff']:.1e}{same} |"
            )
    lines += [f"\nnote: {note}" for note in report["notes"]]
    lines += [f"\nFAILED: {failure}" for failure in report["failures"]]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="gallery sizes (default 1e4 1e5 1e6)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hnsw-max-size", type=int, help="largest gallery HNSW builds (1e5)")
    parser.add_argument("--nlist", type=int, help="IVF lists (default: default_nlist(size))")
    parser.add_argument("--nprobe", type=int, help="IVF lists searched (default: the index's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", "--json", dest="out", help="the JSON file (default: outputs/bench/)"
    )
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke test)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--check-ids", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or list(QUICK_SIZES)
        args.nlist = args.nlist or 100
        args.hnsw_max_size = args.hnsw_max_size if args.hnsw_max_size is not None else 1_000
    args.sizes = args.sizes or list(SIZES)
    args.hnsw_max_size = 100_000 if args.hnsw_max_size is None else args.hnsw_max_size
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.worker:
        worker(args)
        return {}
    from bench_suite import machine

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"outputs/bench/search-{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads())),
        "settings": {k: v for k, v in vars(args).items() if k not in HIDDEN},
        "data": (
            f"Gaussian blobs: a centre ~ N(0, 1) per {PER_CLUSTER} vectors, vectors = centre + "
            f"{NOISE} * N(0, 1); queries around random centres"
        ),
        "notes": [],
        "failures": [],
        "sizes": [],
    }
    if any(n > args.hnsw_max_size for n in args.sizes):
        report["notes"].append(
            f"HNSW only for galleries up to {args.hnsw_max_size:,} (--hnsw-max-size): its build "
            f"is too slow beyond that on few cores"
        )
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_search_"))
    try:
        for n in args.sizes:
            print(f"gallery of {n:,} x {args.dim}:", flush=True)
            rows: dict[str, dict[str, Any]] = {}
            for method in METHODS:
                if method == "hnsw" and n > args.hnsw_max_size:
                    continue
                try:
                    rows[method] = {"method": method, **run_worker(method, n, args, work)}
                except SearchCheckError as err:
                    print("failed")
                    report["failures"].append(str(err))
            checks, failures = check_size(rows)
            report["failures"] += [f"{n:,}: {failure}" for failure in failures]
            for row in rows.values():
                row.pop("arrays")
            report["sizes"].append({"n": n, "rows": list(rows.values()), "checks": checks})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = time.perf_counter() - started
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + markdown(report))
    print(f"\nwrote {out} ({report['wall_s'] / 60:.1f} min)")
    if report["failures"]:
        raise SearchCheckError("; ".join(report["failures"]))
    return report


if __name__ == "__main__":
    main()
