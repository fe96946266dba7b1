"""Training throughput of RVSL per stage, through the real Trainer, DataLoader and PNG files.

For each configuration (demo: ResNet-18-IBN-a at 64x64, batch 32 = 8 ids x 4; r50: the paper
backbone ResNet-50-IBN-a at 128x128, batch 12 = 3 ids x 4), each stage (baseline, syn_haze,
real_clear, real_haze) and each DataLoader worker count, this composes the ``train`` config
users run (``conf/``, through Hydra's compose API: ``data=fvrid``, the stage, the recipe, the
trainer) with the benchmark's sizes and switches as overrides (:func:`overrides`), builds the
datamodule, the model (``rvsl.training.train.build_model``) and the Trainer
(``rvsl.training.train.build_trainer``) from it as ``rvsl-train`` does, and fits for
``warmup + steps`` batches on a generated FVRID-layout folder of PNG images (written at 1.25x
the training size, so decoding and resizing do real work). A callback stamps
``time.perf_counter()`` at ``on_train_batch_start`` / ``on_train_batch_end``:

- compute = end - start of a step (the whole manual-optimisation training_step);
- data wait = the previous step's end -> this step's start: fetching the next batch (Lightning
  prefetches one ahead), moving it to the device and the loop's own overhead;
- step = compute + data wait; pairs/s = synthetic pairs per batch / mean step time.

The FLOPs of one step (forward and backward of every optimizer update; convolutions and matrix
products, counted by ``torch.utils.flop_counter.FlopCounterMode``) are counted during the last
warm-up step, so counting costs no measured time; ``achieved GFLOP/s`` = FLOPs / mean compute
time. Not under ``--compile`` (the counter cannot see inside compiled graphs; the maths is the
same as the eager run's).

``--recipe default paper`` measures the default recipe and/or ``recipe=paper`` (the official
training's switches, ``conf/recipe/paper.yaml``: priors, adversarial pairing, stage hand-over,
augmentation, real-batch sampling); precision stays ``--precision``, and the run length, seed
and data sizes stay the benchmark's.

Speed options, each off by default: ``--precision bf16-mixed``, ``--channels-last``
(``model.channels_last``), ``--compile`` (``model.compile``; its first steps compile, so use
``--warmup`` >= 2), ``--pin-memory`` (``data.pin_memory``; the DataLoader only pins with CUDA).

The first ``--warmup`` (2) steps are skipped. Each run goes in its own process (fork on CPU,
spawn on CUDA), so ``peak RSS`` (``ru_maxrss`` of the training process, DataLoader workers not
included; it starts from the parent's footprint after the imports) and the CUDA peak
(``torch.cuda.max_memory_allocated``) are per run.

    python scripts/bench_train.py [--configs demo r50] [--stages ...] [--steps N]
        [--num-workers 0 2] [--device cpu|cuda] [--precision P] [--channels-last] [--compile]
        [--pin-memory] [--json out.json]

Defaults on CPU: demo with 0 and 2 workers, 2 measured steps; r50 (at 128x128) with 0 workers,
1 measured step (its steps take 2-14 s on 2 CPU cores, and loading is <2% of them). That is
about 5 minutes on a 2-core CPU machine (``--steps 1``: about 4.5). On CUDA: demo, and r50_384
(the paper's 384x384, 36 + 18 images per step, 8 workers). ``--steps`` and ``--num-workers``
override every config.

Note: with workers, their prefetch queue fills during warm-up, so with few measured steps the
data-wait share can read lower than in a long run when loading is the bottleneck.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from PIL import Image
from pytorch_lightning.strategies import DDPStrategy
from torch.profiler import ProfilerActivity
from torch.utils.flop_counter import FlopCounterMode

from rvsl.training.speed import apply_host_settings
from rvsl.training.train import build_model, build_trainer

RECIPES = ("default", "paper")  # conf/recipe/<name>.yaml


@dataclass(frozen=True)
class BenchConfig:
    label: str
    backbone: str
    size: int  # training H = W
    num_instances: int  # K
    batch_size: int  # P x K synthetic pairs
    real_batch_size: int
    steps: int  # default measured steps
    num_workers: tuple[int, ...]  # default DataLoader worker counts
    widths: tuple[int, int, int] = (64, 64, 64)  # backbone, generator, discriminator

    @property
    def ids_per_batch(self) -> int:
        return self.batch_size // self.num_instances


CONFIGS = {
    # the demo's network (conf/experiment/demo.yaml): half-width ResNet-18, narrow GAN parts
    "demo": BenchConfig(
        "demo r18_ibn_a/2@64", "resnet18_ibn_a", 64, 4, 32, 16, 2, (0, 2), (32, 16, 16)
    ),
    # the demo's network before it was made light (full-width ResNet-18, 32 real images)
    "demo_full": BenchConfig(
        "demo_full r18_ibn_a@64", "resnet18_ibn_a", 64, 4, 32, 32, 2, (0,), (64, 32, 64)
    ),
    # 2-14 s per step on 2 CPU cores: one measured step and no worker sweep by default
    "r50": BenchConfig("r50_ibn_a@128", "resnet50_ibn_a", 128, 4, 12, 12, 1, (0,)),
    # the paper's training size and per-GPU batch (data=fvrid): for GPUs
    "r50_384": BenchConfig("r50_ibn_a@384", "resnet50_ibn_a", 384, 6, 36, 18, 10, (8,)),
    # smoke tests of the scripts: seconds on a CPU
    "tiny": BenchConfig("tiny r18_ibn_a@32", "resnet18_ibn_a", 32, 2, 4, 4, 1, (0,)),
}
DEFAULT_CONFIGS = {"cpu": ("demo", "r50"), "cuda": ("demo", "r50_384")}
STAGES = ("baseline", "syn_haze", "real_clear", "real_haze")
IMAGE_SCALE = 1.25  # written images are this much larger than the training size
TEST_IDS = 3


# ---------------------------------------------------------------------------- data
def _image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field plus mild noise: compresses and decodes like a photo."""
    coarse = Image.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32)
    noisy = smooth + rng.normal(0.0, 6.0, size=smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _write_split(
    folder: Path, rng: np.random.Generator, pids: range, per_id: int, size: int, twin: Path | None
) -> None:
    """``per_id`` PNGs per identity, named ``<pid>_c<cam>_<n>.png``; ``twin``: hazy copies."""
    folder.mkdir(parents=True, exist_ok=True)
    if twin is not None:
        twin.mkdir(parents=True, exist_ok=True)
    for pid in pids:
        for j in range(per_id):
            name = f"{pid:04d}_c{j % 3 + 1}_{j:03d}.png"
            clear = _image(rng, size)
            Image.fromarray(clear).save(folder / name)
            if twin is not None:  # the synthetic hazy twin: same name, veiled copy
                hazy = (0.6 * clear + 0.4 * 200).astype(np.uint8)
                Image.fromarray(hazy).save(twin / name)


def make_fvrid(root: Path, cfg: BenchConfig, batches: int) -> Path:
    """An FVRID tree with enough identities for ``batches`` PK batches in ONE epoch, and enough
    real images for ``batches`` real batches in one pass (no epoch or loader restarts).
    A tree this function completed before (under ``--data-dir``) is reused as it is."""
    done = root / ".complete"
    if done.is_file():
        return root
    rng = np.random.default_rng(0)
    size = round(cfg.size * IMAGE_SCALE)
    k = cfg.num_instances
    syn_ids = cfg.ids_per_batch * batches  # one chunk of K per identity: exactly `batches` steps
    real_ids = -(-cfg.real_batch_size * batches // k)
    syn = root / "FVRID_syn"
    _write_split(syn / "train_clear", rng, range(syn_ids), k, size, syn / "train_foggy")
    test = range(10_000, 10_000 + TEST_IDS)
    _write_split(syn / "query_clear", rng, test, 1, size, syn / "query_foggy")
    _write_split(syn / "gallery_clear", rng, test, 2, size, syn / "gallery_foggy")
    for top, kind, first in (("FVRID_clear", "clear", 20_000), ("FVRID_real", "foggy", 30_000)):
        _write_split(
            root / top / f"train_{kind}", rng, range(first, first + real_ids), k, size, None
        )
        _write_split(root / top / f"query_{kind}", rng, test, 1, size, None)
        _write_split(root / top / f"gallery_{kind}", rng, test, 2, size, None)
    done.touch()
    return root


# ---------------------------------------------------------------------------- timing
# where a step's time goes (--breakdown): aten operators by the name fragments of each group
TIME_GROUPS = (
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("convolution", "conv2d")),
    ("normalisation", ("batch_norm", "instance_norm", "group_norm", "layer_norm")),
    ("optimizer updates", ("adam", "foreach", "_fused_")),
    ("resampling and pooling", ("upsample", "pool", "pad")),
)


def time_breakdown(profile: torch.profiler.profile, step_seconds: float) -> dict[str, float]:
    """Seconds of one profiled step per :data:`TIME_GROUPS` group (operators' self time),
    ``other operators``, and ``outside operators`` (Python, Lightning, autograd bookkeeping:
    the step's wall time minus all operators' self time)."""
    seconds = {name: 0.0 for name, _ in TIME_GROUPS} | {"other operators": 0.0}
    for event in profile.key_averages():
        if not event.key.startswith("aten::"):
            continue
        op = event.key.removeprefix("aten::")
        group = next((n for n, frags in TIME_GROUPS if any(f in op for f in frags)), None)
        seconds[group or "other operators"] += event.self_cpu_time_total / 1e6
    seconds["outside operators"] = max(0.0, step_seconds - sum(seconds.values()))
    return seconds


class StepTimer(pl.Callback):
    """perf_counter stamps at the start and end of every training batch, the FLOPs of batch
    ``count_flops_at`` and a profile of batch ``profile_at`` (None: neither)."""

    def __init__(
        self, cuda: bool, count_flops_at: int | None = None, profile_at: int | None = None
    ) -> None:
        self.cuda = cuda
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.count_flops_at = count_flops_at
        self.flops: int | None = None
        self._counter: FlopCounterMode | None = None
        self.profile_at = profile_at
        self.breakdown: dict[str, float] | None = None
        self._profile: torch.profiler.profile | None = None

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.count_flops_at:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        if batch_idx == self.profile_at:
            self._profile = torch.profiler.profile(activities=[ProfilerActivity.CPU])
            self._profile.__enter__()
        self.starts.append(self._now())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(self._now())
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = int(self._counter.get_total_flops())
            self._counter = None
        if self._profile is not None:
            self._profile.__exit__(None, None, None)
            self.breakdown = time_breakdown(self._profile, self.ends[-1] - self.starts[-1])
            self._profile = None

    def split(self, warmup: int, steps: int) -> tuple[list[float], list[float]]:
        """(compute, data wait) per measured step, the first ``warmup`` steps skipped (and a
        profiled step after the measured ones)."""
        first = max(warmup, 1)  # step 0 has no previous end
        last = min(len(self.ends), warmup + steps)
        compute = [self.ends[i] - self.starts[i] for i in range(first, last)]
        wait = [self.starts[i] - self.ends[i - 1] for i in range(first, last)]
        return compute, wait


def _quiet() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")


def _quoted(value: Any) -> str:
    """A Hydra override value that stays one string whatever it holds (spaces, commas, ...)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def overrides(job: dict[str, Any]) -> list[str]:
    """``rvsl-train`` overrides for one run: the stage, the recipe, the FVRID-layout folder and
    the benchmark's sizes, run length and speed switches; everything else is ``conf/``'s."""
    cfg: BenchConfig = job["cfg"]
    root = Path(job["root"])
    backbone_width, generator_width, discriminator_width = cfg.widths
    return [
        "~experiment",  # one stage, not the demo's chain
        f"stage={job['stage']}",
        f"recipe={job.get('recipe', 'default')}",
        f"trainer={'gpu' if job['device'] == 'cuda' else 'cpu'}",
        "data=fvrid",
        f"paths.data_dir={_quoted(root.parent)}",
        f"paths.log_dir={_quoted(root.parent / 'logs')}",
        f"paths.output_dir={_quoted(root.parent / 'run')}",
        f"data.root={_quoted(root)}",
        f"data.image_size=[{cfg.size},{cfg.size}]",
        f"data.num_instances={cfg.num_instances}",
        f"data.batch_size={cfg.batch_size}",
        f"data.real_batch_size={cfg.real_batch_size}",
        "data.test_sets=[SYN]",
        f"data.num_workers={job['num_workers']}",
        f"data.pin_memory={str(job['pin_memory']).lower()}",
        "seed=0",
        f"model.net.backbone={cfg.backbone}",
        f"model.net.backbone_width={backbone_width}",
        f"model.net.generator_width={generator_width}",
        f"model.discriminator.width={discriminator_width}",
        "model.pretrained=scratch",  # random weights: no ImageNet file needed to time a step
        f"model.channels_last={str(job['channels_last']).lower()}",
        f"model.compile={str(job['compile']).lower()}",
        f"trainer.precision={job['precision']}",
        "trainer.max_epochs=1",
        # manual optimisation counts every optimizer.step() in global_step (up to 3 per batch),
        # so the run length is set in batches, not with max_steps
        f"trainer.limit_train_batches={job['warmup'] + job['steps'] + bool(job.get('breakdown'))}",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]


def compose_train_config(job: dict[str, Any]) -> DictConfig:
    """The ``train`` config ``rvsl-train`` composes, with :func:`overrides` on top."""
    with initialize_config_module(config_module="rvsl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides(job))


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Fit one (config, stage, workers) for warmup + steps batches and measure it."""
    _quiet()
    cfg: BenchConfig = job["cfg"]
    device = torch.device(job["device"])
    cuda = device.type == "cuda"
    pl.seed_everything(0, workers=True, verbose=False)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run_cfg = compose_train_config(job)
    apply_host_settings(run_cfg)  # as rvsl-train does at start-up
    datamodule = hydra.utils.instantiate(run_cfg.data)
    model = build_model(run_cfg, datamodule.num_classes)
    # the last warm-up step: its counting overhead is in no measured compute or data wait
    profile_at = job["warmup"] + job["steps"] if job.get("breakdown") else None
    timer = StepTimer(cuda, None if job["compile"] else job["warmup"] - 1, profile_at)
    strategy: Any = "auto"
    if job.get("ddp"):  # one process: what DDP's reducer costs over plain training
        strategy = DDPStrategy(
            process_group_backend="nccl" if cuda else "gloo",
            find_unused_parameters=job["ddp"] == "find_unused",
        )
    trainer = build_trainer(
        run_cfg.trainer,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        callbacks=[timer],
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    trainer.fit(model, datamodule=datamodule)
    compute, wait = timer.split(job["warmup"], job["steps"])
    if not compute:
        raise RuntimeError(f"no measured steps ({len(timer.ends)} ran, warmup {job['warmup']})")
    step = [c + w for c, w in zip(compute, wait, strict=True)]
    row = {
        "config": cfg.label,
        "backbone": cfg.backbone,
        "widths": list(cfg.widths),
        "image_size": cfg.size,
        "batch_size": cfg.batch_size,
        "real_batch_size": cfg.real_batch_size
        if job["stage"] in ("real_clear", "real_haze")
        else 0,
        "stage": job["stage"],
        "recipe": job.get("recipe", "default"),
        "num_workers": job["num_workers"],
        "strategy": f"ddp ({job['ddp']})" if job.get("ddp") else "single",
        "precision": job["precision"],
        "channels_last": job["channels_last"],
        "compile": job["compile"],
        "pin_memory": job["pin_memory"],
        "measured_steps": len(step),
        "first_step_s": timer.ends[0] - timer.starts[0],  # includes compiling, if any
        "pairs_per_s": cfg.batch_size * len(step) / sum(step),
        "step_ms": 1000 * float(np.mean(step)),
        "step_ms_median": 1000 * float(np.median(step)),
        "compute_ms": 1000 * float(np.mean(compute)),
        "data_wait_ms": 1000 * float(np.mean(wait)),
        "data_wait_pct": 100 * sum(wait) / sum(step),
        "flops_per_step": timer.flops,
        "achieved_gflops": timer.flops / float(np.mean(compute)) / 1e9 if timer.flops else None,
        "torch_threads": torch.get_num_threads(),
        "rss_at_start_mib": rss_start,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "breakdown_s": timer.breakdown,
    }
    if cuda:
        row["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def format_breakdown(seconds: dict[str, float]) -> str:
    """One indented line: each group's share of the profiled step."""
    total = sum(seconds.values())
    shares = {name: 100 * value / total for name, value in seconds.items()}
    parts = [f"{name} {f'{v:.0f}' if v >= 1 else '<1'}%" for name, v in shares.items()]
    return f"    where the profiled step's {total:.2f} s went: " + ", ".join(parts)


def _child(job: dict[str, Any], conn) -> None:
    try:
        conn.send(("ok", run_one(job)))
    except BaseException as err:  # report, don't hang the parent
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def run_isolated(job: dict[str, Any], context: mp.context.BaseContext) -> dict[str, Any]:
    """``run_one`` in a fresh process, so peak memory is this run's alone."""
    receive, send = context.Pipe(duplex=False)
    proc = context.Process(target=_child, args=(job, send))
    proc.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:
        status, payload = "error", "the benchmark process died"
    proc.join()
    if status != "ok":
        raise RuntimeError(
            f"{job['cfg'].label} / {job['stage']} / {job['num_workers']} workers: "
            f"{payload} (exit code {proc.exitcode})"
        )
    return payload


# ---------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=list(CONFIGS),
        help="default: demo r50 on CPU, demo r50_384 on CUDA",
    )
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument(
        "--recipe",
        nargs="+",
        default=["default"],
        choices=RECIPES,
        help="training recipes to measure, each stage under each (default: default)",
    )
    parser.add_argument(
        "--steps", type=int, help="measured steps per run, all configs (default: demo 2, r50 1)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="steps skipped first (default 2)")
    parser.add_argument(
        "--num-workers",
        nargs="+",
        type=int,
        help="DataLoader worker counts, all configs (default: demo 0 2, r50 0)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32-true", help="Trainer precision, e.g. bf16-mixed")
    parser.add_argument("--channels-last", action="store_true", help="model.channels_last=true")
    parser.add_argument("--compile", action="store_true", help="model.compile=true")
    parser.add_argument(
        "--pin-memory", action="store_true", help="data.pin_memory=true (default: off)"
    )
    parser.add_argument(
        "--ddp",
        nargs="+",
        default=[],
        choices=["find_unused"],
        help="also run under DDPStrategy(find_unused_parameters=True) on one device (what the "
        "ddp configs use), to measure what DDP costs over the plain run",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="profile one more step after the measured ones: where its time goes",
    )
    parser.add_argument("--data-dir", help="where to write the PNG folders (default: a temp dir)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (step 0 has no data wait to measure)")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    # a forked child cannot use CUDA (nor OpenMP the parent already used): spawn on GPUs
    context = mp.get_context("spawn" if cuda else "fork")

    configs = args.configs or list(DEFAULT_CONFIGS[args.device])
    options = {
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "pin_memory": args.pin_memory,
    }
    print(
        f"device: {args.device}, torch {torch.__version__}, lightning {pl.__version__}, "
        f"warm-up {args.warmup}, options {options}"
    )
    header = (
        f"{'config':18} {'stage':10} {'recipe':8} {'strategy':20} {'workers':>7} {'steps':>5} "
        f"{'pairs/s':>8} "
        f"{'step ms':>8} "
        f"{'data-wait %':>11} {'GFLOP/s':>8} {'peak RSS MiB':>12}"
    )
    if cuda:
        header += f" {'peak CUDA MiB':>13}"
    tmp = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="bench_train_"))
    rows = []
    started = time.perf_counter()
    try:
        for key in configs:
            cfg = CONFIGS[key]
            steps = args.steps or cfg.steps
            # Lightning prefetches one batch ahead; --breakdown profiles one more
            batches = args.warmup + steps + 2 + args.breakdown
            t0 = time.perf_counter()
            root = make_fvrid(tmp / f"{key}_{cfg.size}_{batches}", cfg, batches)
            print(
                f"{cfg.label}: wrote FVRID PNGs at {round(cfg.size * IMAGE_SCALE)}px to {root} "
                f"in {time.perf_counter() - t0:.1f}s"
            )
            print(header)
            print("-" * len(header))
            for workers in args.num_workers or cfg.num_workers:
                runs = itertools.product(args.stages, args.recipe, [None, *args.ddp])
                for stage, recipe, ddp in runs:
                    job = {
                        "cfg": cfg,
                        "stage": stage,
                        "recipe": recipe,
                        "num_workers": workers,
                        "root": str(root),
                        "steps": steps,
                        "warmup": args.warmup,
                        "device": args.device,
                        "ddp": ddp,
                        "breakdown": args.breakdown,
                        **options,
                    }
                    row = run_isolated(job, context)
                    rows.append(row)
                    line = (
                        f"{cfg.label:18} {stage:10} {recipe:8} {row['strategy']:20} {workers:>7} "
                        f"{row['measured_steps']:>5} "
                        f"{row['pairs_per_s']:>8.1f} {row['step_ms']:>8.0f} "
                        f"{row['data_wait_pct']:>11.1f} "
                        f"{row['achieved_gflops'] or float('nan'):>8.1f} "
                        f"{row['peak_rss_mib']:>12.0f}"
                    )
                    if "peak_cuda_mib" in row:
                        line += f" {row['peak_cuda_mib']:>13.0f}"
                    print(line, flush=True)
                    if row["breakdown_s"]:
                        print(format_breakdown(row["breakdown_s"]), flush=True)
            print()
    finally:
        if not args.data_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    threads = sorted({row["torch_threads"] for row in rows})
    print(f"total {time.perf_counter() - started:.0f}s; torch threads per run: {threads}")
    if args.json:
        with open(args.json, "w") as handle:
            meta = {
                "device": args.device,
                "torch": torch.__version__,
                "lightning": pl.__version__,
                "warmup": args.warmup,
                **options,
            }
            json.dump({**meta, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
