"""This machine's measured matrix-multiply peak, the yardstick for a training step's FLOP rate.

Times ``a @ b`` on square matrices (2 n^3 FLOPs each) and keeps the best of several rounds,
per dtype: float32 (on GPUs with TF32 off, and again as ``tf32`` with it on) and bfloat16.
A good GEMM is about as fast as this hardware gets for dense maths, so "achieved FLOP/s of a
step / this peak" says how much of the machine the step uses.

A dtype without fast kernels here (bfloat16 on a CPU without AVX512-BF16/AMX runs at well under
1 GFLOP/s) would take minutes at full size, so a small probe first sizes the matrices for about
``--target-seconds`` per call; the size used is reported.

    python scripts/bench_matmul.py [--device cpu|cuda] [--size N] [--dtypes ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16}


PROBE_SIZE = 256


def matmul_flops_per_s(
    size: int, dtype: str, device: torch.device, min_seconds: float = 0.5, rounds: int = 3
) -> float:
    """Best FLOP/s over ``rounds`` rounds of at least ``min_seconds`` of back-to-back matmuls."""
    cuda = device.type == "cuda"
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(size, size, device=device, generator=gen).to(DTYPES[dtype])
        b = torch.randn(size, size, device=device, generator=gen).to(DTYPES[dtype])
        out = torch.empty_like(a)

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize(device)

        torch.matmul(a, b, out=out)  # warm-up: library selection, page faults
        sync()
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        sync()
        once = max(time.perf_counter() - start, 1e-6)
        calls = max(1, int(min_seconds / once))
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls):
                torch.matmul(a, b, out=out)
            sync()
            best = max(best, 2 * size**3 * calls / (time.perf_counter() - start))
        return best
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32


def fitted_size(size: int, dtype: str, device: torch.device, target_seconds: float) -> int:
    """``size``, or less when one call at that size would take longer than ``target_seconds``
    at the rate a quick probe measures (a multiple of 64, at least the probe's size)."""
    rate = matmul_flops_per_s(PROBE_SIZE, dtype, device, min_seconds=0.05, rounds=1)
    affordable = int((rate * target_seconds / 2) ** (1 / 3)) // 64 * 64
    return max(PROBE_SIZE, min(size, affordable))


def measure(
    device: torch.device, size: int | None, dtypes: list[str], target_seconds: float = 0.25
) -> dict:
    """``{dtype: {"gflops": ..., "size": n}}`` for this device (tf32 only on CUDA)."""
    cuda = device.type == "cuda"
    size = size or (8192 if cuda else 2048)
    peaks = {}
    for dtype in dtypes:
        if dtype == "tf32" and not cuda:
            continue
        n = fitted_size(size, dtype, device, target_seconds)
        peaks[dtype] = {"gflops": matmul_flops_per_s(n, dtype, device) / 1e9, "size": n}
    return peaks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, help="matrix side (default: 2048 CPU, 8192 GPU)")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument(
        "--target-seconds", type=float, default=0.25, help="longest single call (0.25)"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    peaks = measure(device, args.size, args.dtypes, args.target_seconds)
    print(f"matmul peak on {device} ({torch.get_num_threads()} CPU threads):")
    for dtype, row in peaks.items():
        print(f"  {dtype:9} {row['gflops']:10.1f} GFLOP/s  (n={row['size']})")
    result = {"device": str(device), "torch_threads": torch.get_num_threads(), "peaks": peaks}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
