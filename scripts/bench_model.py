"""Throughput of the RVSL network: evaluation forward and one stage-1 forward+backward.

Prints a table (images/s, fp32 vs channels_last) for ResNet-50-IBN-a at 128x128 and for
the small demo-size configuration, and optionally writes it as JSON.

    python scripts/bench_model.py [--device cpu|cuda] [--iters 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from rvsl.models import PatchDiscriminator, RVSLNet

CONFIGS = {
    "resnet50_ibn_a@128x128": ("resnet50_ibn_a", (128, 128), 16),
    "demo: resnet18_ibn_a@64x64": ("resnet18_ibn_a", (64, 64), 32),
}


def stage1_step(net, disc_clear, disc_hazy, clear, hazy, pids):
    """The stage-1 generator-side loss shape: ReID on both branches, P2P, EA and adversarial."""
    out = net(clear, hazy)
    loss = (
        F.cross_entropy(out["logits_clear"], pids)
        + F.cross_entropy(out["logits_hazy"], pids)
        + 0.5
        * (F.smooth_l1_loss(out["gen_clear"], clear) + F.smooth_l1_loss(out["gen_hazy"], hazy))
        + 0.5 * F.l1_loss(out["global_clear"], out["global_hazy"])
        + 0.25
        * (
            disc_clear(out["gen_clear"]).square().mean()
            + disc_hazy(out["gen_hazy"]).square().mean()
        )
    )
    loss.backward()


def timed(fn, iters: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def bench(name, backbone, size, batch, channels_last, iters, device):
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = RVSLNet(backbone, num_classes=100).to(device, memory_format=memory_format)
    discs = [PatchDiscriminator().to(device, memory_format=memory_format) for _ in range(2)]
    clear = torch.rand(batch, 3, *size, device=device).to(memory_format=memory_format)
    hazy = torch.rand(batch, 3, *size, device=device).to(memory_format=memory_format)
    pids = torch.randint(0, 100, (batch,), device=device)

    net.eval()

    def evaluate():
        with torch.inference_mode():
            net.embed(clear)

    eval_s = timed(evaluate, iters, device)
    net.train()

    def train():
        net.zero_grad(set_to_none=True)
        stage1_step(net, *discs, clear, hazy, pids)

    train_s = timed(train, iters, device)
    return {
        "config": name,
        "batch": batch,
        "memory_format": "channels_last" if channels_last else "contiguous",
        "eval_images_per_s": batch / eval_s,
        "stage1_train_images_per_s": batch / train_s,  # one image = one synthetic pair
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)

    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    header = f"{'config':30} {'batch':>5} {'layout':>14} {'eval img/s':>11} {'stage1 img/s':>13}"
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.configs:
        backbone, size, batch = CONFIGS[name]
        for channels_last in (False, True):
            row = bench(name, backbone, size, batch, channels_last, args.iters, device)
            rows.append(row)
            print(
                f"{name:30} {batch:>5} {row['memory_format']:>14} "
                f"{row['eval_images_per_s']:>11.1f} {row['stage1_train_images_per_s']:>13.1f}"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": str(device), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
