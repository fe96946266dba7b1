"""Embedding throughput from image files on CPU: the Reidentifier before and after the engine.

Methods (rows), every one on the same JPEG files, at the same batch size, hazy branch:

- ``old``: what ``Reidentifier.embed`` did before it used the engine, reproduced here
  (:func:`old_embed`): each file decoded in the main thread (``load_image`` + the eval
  transform), one batch at a time through ``net.embed``;
- ``reidentifier``: ``Reidentifier.embed(paths, num_workers=W)``, W = 0 and ``--workers``:
  ``ImageFiles`` decoded by DataLoader workers, batches through the engine's EmbeddingModule;
- ``search engine``: ``rvsl.search.embedding.Embedder`` (``EmbedOptions(device="cpu",
  workers=W, branch="hazy", progress=False)``), ``.embed(paths)``: what ``rvsl-search index``
  runs, Lightning's ``Trainer.predict`` with shard files; it also hashes each file and scores
  its haze, work the other rows do not do.

Configurations: ``demo``, the demo world's model size (input 64x64 as the checkpoint records;
JPEGs of 128x128), and ``256`` (input 256x256, JPEGs of 320x320), both on a randomly
initialised ResNet-50-IBN-a (throughput does not depend on the weights) saved with
``save_net(..., image_size=[H, W])`` and loaded from that file. ``--images`` (256) synthetic
JPEGs (smooth random colour fields plus noise, quality 90) are written once per
configuration into a temporary folder.

Each method is warmed up on one batch; then ``--repeats`` (3) timed passes over all the
files, the methods taking turns in each round so that a change in machine load hits them
alike. A pass is one call, as a user makes it: with workers, their start is timed too.
Figures: median images/s, the ratio to ``old``'s median, and the max abs difference of the
features from ``old``'s (0 for the Reidentifier: the same batches through the same code; the
search engine's may differ in the last bits).

    python scripts/bench_embed_engine.py [--configs demo 256] [--images 256]
        [--batch-size 32] [--workers 2] [--repeats 3] [--out FILE.json] [--quick]

``--quick``: a tiny ResNet-18-IBN-a (backbone width 16, generators 8), 32 images, one
repeat, both sizes: a smoke test of under a minute. The full run takes about 15-20 minutes on
an idle 2-core machine, nearly all of it ResNet-50 at 256x256 (a few images/s whatever the
method: decoding is a small share there). Without ``--out`` the JSON goes to
``outputs/bench/embed-engine-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rvsl.data.transforms import load_image
from rvsl.inference import Reidentifier
from rvsl.models import RVSLNet, save_net
from rvsl.search.embedding import Embedder, EmbedOptions

BRANCH = "hazy"


@dataclass(frozen=True)
class Config:
    backbone: str
    image_size: tuple[int, int]  # the network's input, recorded in the checkpoint
    source_size: tuple[int, int]  # the JPEG files' size
    backbone_width: int = 64
    generator_width: int = 64


CONFIGS = {
    "demo": Config("resnet50_ibn_a", (64, 64), (128, 128)),
    "256": Config("resnet50_ibn_a", (256, 256), (320, 320)),
}
QUICK_CONFIGS = {
    "demo": Config("resnet18_ibn_a", (64, 64), (128, 128), 16, 8),
    "256": Config("resnet18_ibn_a", (256, 256), (320, 320), 16, 8),
}


# ---------------------------------------------------------------------------- data
def write_jpegs(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    """``count`` RGB JPEGs of (H, W) ``size``: smooth random colour fields plus noise, which
    compress and decode like photographs rather than like white noise."""
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(count):
        field = torch.rand(1, 3, 6, 6, generator=gen)
        image = torch.nn.functional.interpolate(field, size=size, mode="bicubic")
        image = (image + 0.05 * torch.randn(1, 3, *size, generator=gen)).clamp(0, 1)
        pixels = (image[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        path = folder / f"{i:05d}_c{i % 4 + 1}.jpg"
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, quality=90)
        paths.append(str(path))
    return paths


# ---------------------------------------------------------------------------- methods
def old_embed(
    net: RVSLNet, transform: Callable[[Any], torch.Tensor], paths: Sequence[str], batch_size: int
) -> torch.Tensor:
    """``Reidentifier.embed`` before the engine: files decoded one at a time in the main
    thread, each batch through ``net.embed`` (the baseline)."""
    parts = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            batch = torch.stack([transform(load_image(p)).as_subclass(torch.Tensor) for p in chunk])
            parts.append(net.embed(batch, BRANCH)[f"feat_{BRANCH}"].float().cpu())
    return torch.cat(parts)


def methods(
    checkpoint: Path, batch_size: int, workers: int
) -> dict[str, tuple[int | None, Callable[[Sequence[str]], torch.Tensor]]]:
    """name -> (workers, paths -> features)."""
    reid = Reidentifier.from_checkpoint(checkpoint)
    rows: dict[str, tuple[int | None, Callable[[Sequence[str]], torch.Tensor]]] = {
        "old": (None, lambda paths: old_embed(reid.net, reid.transform, paths, batch_size))
    }
    for w in dict.fromkeys((0, workers)):
        rows[f"reidentifier w={w}"] = (
            w,
            lambda paths, w=w: reid.embed(paths, BRANCH, batch_size, num_workers=w),
        )
    for w in dict.fromkeys((0, workers)):
        options = EmbedOptions(
            branch=BRANCH, device="cpu", batch_size=batch_size, workers=w, progress=False
        )
        embedder = Embedder(checkpoint, options)
        rows[f"search engine w={w}"] = (w, lambda paths, e=embedder: e.embed(paths)["feature"])
    return rows


# ---------------------------------------------------------------------------- measuring
def bench_config(name: str, config: Config, args: argparse.Namespace, work: Path) -> dict:
    """One configuration: every method's median images/s and its features' difference from old."""
    folder = work / name
    folder.mkdir()
    print(f"{name}: writing {args.images} JPEGs of {config.source_size}", flush=True)
    paths = write_jpegs(folder, args.images, config.source_size, args.seed)
    torch.manual_seed(args.seed)
    net = RVSLNet(
        config.backbone,
        num_classes=10,
        generator_width=config.generator_width,
        backbone_width=config.backbone_width,
    )
    checkpoint = work / f"{name}.ckpt"
    save_net(net.eval(), checkpoint, image_size=list(config.image_size))
    rows = methods(checkpoint, args.batch_size, args.workers)
    warm = paths[: args.batch_size]
    for label, (_, run) in rows.items():
        print(f"  warm-up {label}", flush=True)
        run(warm)
    seconds: dict[str, list[float]] = {label: [] for label in rows}
    features: dict[str, torch.Tensor] = {}
    for repeat in range(args.repeats):
        for label, (_, run) in rows.items():
            start = time.perf_counter()
            feats = run(paths)
            seconds[label].append(time.perf_counter() - start)
            features.setdefault(label, feats)
            print(
                f"  [{repeat + 1}/{args.repeats}] {label}: "
                f"{len(paths) / seconds[label][-1]:.1f} images/s",
                flush=True,
            )
    old_rate = len(paths) / statistics.median(seconds["old"])
    results = []
    for label, (workers, _) in rows.items():
        rate = len(paths) / statistics.median(seconds[label])
        diff = (features[label] - features["old"]).abs().max().item()
        results.append(
            {
                "method": label.split(" w=")[0],
                "workers": workers,
                "images_per_s": rate,
                "ratio_vs_old": rate / old_rate,
                "seconds": seconds[label],
                "max_abs_diff_vs_old": diff,
            }
        )
    return {
        "config": name,
        **asdict(config),
        "images": len(paths),
        "feature_dim": int(net.feature_dim),
        "rows": results,
    }


# ---------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"## Embedding throughput from JPEG files, CPU, batch {s['batch_size']}, {BRANCH} branch",
        "",
        f"{report['machine']['cpu']}, {report['machine']['cpu_count']} cores, torch threads "
        f"{report['machine']['torch_threads']}; median of {s['repeats']} passes over "
        f"{s['images']} files.",
        "",
        "| config | model input | JPEG size | method | workers | images/s | vs old "
        "| max abs diff vs old |",
        "|---|---|---|---|--:|--:|--:|--:|",
    ]
    for config in report["configs"]:
        first = (
            f"{config['config']} ({config['backbone']}) | "
            f"{'x'.join(map(str, config['image_size']))} | "
            f"{'x'.join(map(str, config['source_size']))}"
        )
        for row in config["rows"]:
            workers = "main thread" if row["workers"] is None else row["workers"]
            lines.append(
                f"| {first} | {row['method']} | {workers} | {row['images_per_s']:.1f} | "
                f"{row['ratio_vs_old']:.2f}x | {row['max_abs_diff_vs_old']:.1e} |"
            )
            first = " |  | "
    if s["quick"]:
        lines.append(
            "\n--quick: a tiny network on few files, a smoke test; the figures mean little."
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--images", type=int, help="JPEG files per configuration (256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the W rows")
    parser.add_argument("--repeats", type=int, help="timed passes per method (3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", "--json", dest="out", help="the JSON file (default: outputs/bench/)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny network (a smoke test)")
    args = parser.parse_args(argv)
    args.images = args.images or (32 if args.quick else 256)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if min(args.images, args.batch_size, args.repeats) < 1 or args.workers < 1:
        parser.error("--images, --batch-size, --repeats and --workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    from bench_suite import machine  # scripts/ is on sys.path when a script runs

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no "GPU available" per Trainer
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)")  # Lightning's own
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"outputs/bench/embed-engine-{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    table = QUICK_CONFIGS if args.quick else CONFIGS
    report: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "settings": vars(args),
        "configs": [],
    }
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_embed_engine_"))
    try:
        for name in args.configs:
            report["configs"].append(bench_config(name, table[name], args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = time.perf_counter() - started
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + markdown(report))
    print(f"\nwrote {out} ({report['wall_s'] / 60:.1f} min)")
    return report


if __name__ == "__main__":
    main()
