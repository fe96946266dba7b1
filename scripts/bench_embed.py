"""Embedding throughput on CPU: PyTorch eval (inference_mode) against the exported ONNX model.

Randomly initialised weights (throughput does not depend on them). One branch's embedding,
as ``rvsl-export`` writes it; ONNX Runtime with the CPU provider and as many threads as torch.

    python scripts/bench_embed.py [--iters 5] [--threads N] [--configs ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from rvsl.export import export_embed
from rvsl.models import RVSLNet

#: name -> (backbone, (H, W), batch): the paper's eval size, and the demo configuration.
CONFIGS = {
    "resnet50_ibn_a@256x256": ("resnet50_ibn_a", (256, 256), 16),
    "resnet18_ibn_a@64x64": ("resnet18_ibn_a", (64, 64), 64),
}


def _seconds_per_call(fn: Callable[[], object], iters: int) -> float:
    fn()  # warm-up: allocations, kernel selection
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def bench(
    backbone: str = "resnet18_ibn_a",
    image_size: tuple[int, int] = (64, 64),
    batch: int = 64,
    iters: int = 5,
    threads: int | None = None,
    branch: str = "hazy",
) -> dict:
    """Images/s of one branch's embedding in PyTorch and in ONNX Runtime, plus their max abs
    difference on the timed batch and the export time."""
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = RVSLNet(backbone, generator_width=8).eval()  # generators are not on this path
    images = torch.rand(batch, 3, *image_size)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_embed(net, Path(tmp) / "embed.onnx", image_size, branch=branch)
        export_s = time.perf_counter() - start
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return net.embed(images, branch)[f"feat_{branch}"].numpy()

    feed = {"images": images.numpy()}

    def run_ort() -> np.ndarray:
        return session.run(["features"], feed)[0]

    torch_s = _seconds_per_call(run_torch, iters)
    ort_s = _seconds_per_call(run_ort, iters)
    return {
        "backbone": backbone,
        "image_size": list(image_size),
        "batch": batch,
        "iters": iters,
        "threads": threads,
        "torch_images_per_s": batch / torch_s,
        "onnxruntime_images_per_s": batch / ort_s,
        "speedup": torch_s / ort_s,
        "max_abs_error": float(np.abs(run_torch() - run_ort()).max()),
        "export_s": export_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5, help="timed calls per runtime (5)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch's default)")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {threads} CPU threads")
    header = f"{'config':24} {'batch':>5} {'torch img/s':>12} {'ORT img/s':>10} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.configs:
        backbone, size, batch = CONFIGS[name]
        row = bench(backbone, size, batch, args.iters, threads)
        rows.append({"config": name, **row})
        print(
            f"{name:24} {batch:>5} {row['torch_images_per_s']:>12.1f} "
            f"{row['onnxruntime_images_per_s']:>10.1f} {row['speedup']:>7.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
