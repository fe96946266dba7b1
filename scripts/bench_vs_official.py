"""A training step of ``rvsl`` against the authors' code, side by side, in turns.

Both implementations train the same network (ResNet-50-IBN-a encoders and trunk, the two
generators, the PatchGAN discriminators) on the same tensors (one batch made from one seed),
step for step in turns: one ``rvsl`` step through Lightning's training loop, then one step of
the authors' trainer object (``STAGE1_Trainer.step`` / ``STAGE3_Trainer.step``, their losses,
optimizers, image buffers and per-step SSIM/PSNR), then the next ``rvsl`` step, and so on.
``rvsl`` runs ``recipe=paper`` (the official training's switches) with the stage's paper loss
weights and the speed options ``rvsl-train`` picks for the device; both start from random
weights (the authors' ImageNet download is replaced by an empty state dict) in float32.

Each side runs in its own process, started as its own command would start it, and the two
take turns in lockstep (one waits, blocked, while the other steps): ``rvsl``'s process makes
the start-up settings ``rvsl-train`` makes (``keep_freed_memory``: glibc keeps freed memory on
CPU runs), the authors' process has the C library's defaults, as ``python stage1_trainer.py``
has. ``--malloc keep`` or ``--malloc default`` give both processes the same allocator
behaviour instead, which isolates what the code itself gains.

What is reported per stage (1 = ``syn_haze``, 3 = ``real_haze``):

- the median seconds of the measured steps of each side and the speed ratio official / rvsl
  (> 1: rvsl is faster), after ``--warmup`` steps of each that are not measured;
- the FLOPs of one step of each side (``torch.utils.flop_counter.FlopCounterMode``, counted in
  the last warm-up step) and the achieved FLOP rate as a fraction of this run's float32 matmul
  peak (``bench_matmul.py``, measured at start-up);
- per step, the minor page faults and kernel seconds of this process, and a quiet-machine
  check: the CPU time other processes used during the step (``/proc/stat`` minus this
  process), in cores; a step where others used more than ``--max-others`` cores is flagged.

The authors' code comes from a local checkout (``--official-root``: the folder holding their
``stage1_trainer.py``, e.g. ``RVSL/`` of
https://github.com/AaronCIH/RVSL-rvsl-robust-vehicle-similarity-learning--ECCV22); nothing of
it is copied here. It is written for CUDA: in its process ``.cuda()`` returns its tensor or
module unchanged and ``torch.cuda.FloatTensor`` is the CPU type, so it runs on the CPU; with
``--device cuda`` it runs as written (in float32: its fp16 needs NVIDIA apex). It needs
``yacs`` (its config); ``cv2``, ``matplotlib`` and ``sklearn``, which its modules import for
plots and evaluation only, are replaced by placeholders when missing. Without
``--official-root`` the script says so and exits 0.

    python scripts/bench_vs_official.py --official-root /path/to/RVSL [--stages 1 3]
        [--device cpu|cuda] [--backbone resnet50_ibn_a] [--size 128] [--ids 2]
        [--instances 4] [--real 18] [--steps 8] [--warmup 2] [--malloc shipped|keep|default]
        [--rvsl OVERRIDE ...] [--json out.json]

``--rvsl`` passes Hydra overrides to the ``rvsl`` side (``model.channels_last=false`` ...),
to measure its options on and off against the same official step.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from bench_train import _quiet as quiet_lightning  # scripts/ is on sys.path
from rvsl.training.speed import apply_host_settings
from rvsl.training.train import build_model, build_trainer
from rvsl.utils.memory import keep_freed_memory

STAGES = {1: "syn_haze", 3: "real_haze"}
NUM_CLASSES = 100  # synthetic training identities (the classifier's width)
READY, STEP, COUNT, RESUME, QUIT = "ready", "step", "count", "resume", "quit"  # lockstep
MALLOC = ("shipped", "keep", "default")
OFFICIAL_BACKBONE = {"resnet50_ibn_a": "resnet50", "resnet101_ibn_a": "resnet101"}
PLOT_ONLY_MODULES = (
    "cv2",
    "matplotlib",
    "matplotlib.pyplot",
    "sklearn",
    "sklearn.metrics",
    "sklearn.metrics.pairwise",
)
OFFICIAL_MODULES = ("config", "dataset", "models", "losses", "utils", "evaluate", "optim")


# ---------------------------------------------------------------------------- the machine
class CpuMeter:
    """This process's page faults and CPU seconds, and other processes' CPU use, over a span
    (``cuda``: the GPU's queued work finished before each reading)."""

    def __init__(self, cuda: bool = False) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.cuda = cuda

    def _busy_seconds(self) -> float:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / self.ticks

    def snapshot(self) -> tuple[float, float, float, float, int]:
        if self.cuda:
            torch.cuda.synchronize()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return (
            time.perf_counter(),
            self._busy_seconds(),
            usage.ru_utime + usage.ru_stime,
            usage.ru_stime,
            usage.ru_minflt,
        )

    @staticmethod
    def span(start: tuple, end: tuple) -> dict[str, float]:
        wall = end[0] - start[0]
        own = end[2] - start[2]
        return {
            "seconds": wall,
            "others_cores": max(0.0, (end[1] - start[1]) - own) / max(wall, 1e-9),
            "kernel_seconds": end[3] - start[3],
            "minor_faults": end[4] - start[4],
        }


def matmul_peak_gflops(device: str) -> tuple[str, float]:
    """This run's matmul peak (scripts/bench_matmul.py), the yardstick of both sides: float32
    on a CPU, TF32 on a GPU (what cuDNN's float32 convolutions use by default)."""
    import bench_matmul  # scripts/ is on sys.path when a script runs

    dtype = "tf32" if device == "cuda" else "float32"
    return dtype, bench_matmul.measure(torch.device(device), None, [dtype])[dtype]["gflops"]


# ---------------------------------------------------------------------------- the batch
def make_batch(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """One batch, shared by both sides: P identities x K synthetic pairs, and real images."""
    gen = torch.Generator().manual_seed(0)
    n, size = args.ids * args.instances, (3, args.size, args.size)
    clear = torch.rand(n, *size, generator=gen) * 2 - 1
    hazy = (0.6 * clear + 0.4 * 0.6).clamp(-1, 1)
    pids = torch.arange(args.ids).repeat_interleave(args.instances) % num_classes
    real = torch.rand(args.real, *size, generator=gen) * 2 - 1
    return {"clear": clear, "hazy": hazy, "pid": pids, "real": real}


def rvsl_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch as ``RVSLDataModule`` collates it."""
    n, r = len(batch["pid"]), len(batch["real"])
    syn = {"clear": batch["clear"], "hazy": batch["hazy"], "pid": batch["pid"]}
    syn["camid"] = torch.zeros(n, dtype=torch.long)
    real = {"image": batch["real"], "pid": torch.zeros(r, dtype=torch.long)}
    real["camid"] = torch.zeros(r, dtype=torch.long)
    return {"syn": syn, "real": real}


def official_batches(batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The batch as the authors' collate functions give it: (synthetic, real)."""
    names = [f"{i}.jpg" for i in range(len(batch["pid"]))]
    syn = {"Foggy": batch["hazy"], "Clear": batch["clear"], "pids": batch["pid"]}
    syn |= {"Foggy_paths": names, "Clear_paths": names}
    real = {"imgs": batch["real"], "paths": [f"r{i}.jpg" for i in range(len(batch["real"]))]}
    return syn, real


class Repeat(Dataset):
    """The same collated batch, ``length`` times (DataLoader with ``batch_size=None``)."""

    def __init__(self, batch: Any, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.batch


# ---------------------------------------------------------------------------- the authors' side
def _placeholder(name: str) -> types.ModuleType:
    """A stand-in module: any name imported from it is a function that raises when called."""
    module = types.ModuleType(name)

    def missing(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"{name}.{attr} is not installed (not needed to time a step)")

        return unavailable

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


def _stand_ins(names: tuple[str, ...]) -> list[str]:
    """Placeholders for the modules of ``names`` that do not import; the names added."""
    added = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = _placeholder(name)
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, sys.modules[name])
            added.append(name)
    return added


def check_official_root(root: Path) -> None:
    """A clear exit when ``root`` is not the authors' RVSL/ folder or yacs is missing."""
    if not (root / "stage1_trainer.py").is_file():
        raise SystemExit(f"--official-root {root} has no stage1_trainer.py (their RVSL/ folder)")
    try:
        importlib.import_module("yacs")
    except ImportError as error:
        raise SystemExit("the authors' code needs yacs (its config): pip install yacs") from error


@contextlib.contextmanager
def authors_code(root: Path, cuda: bool) -> Iterator[None]:
    """The authors' modules importable from ``root``, without downloads, and (unless ``cuda``)
    runnable on the CPU (see the module docstring); everything is put back on exit."""
    check_official_root(root)
    saved = {
        (torch.Tensor, "cuda"): torch.Tensor.cuda,
        (nn.Module, "cuda"): nn.Module.cuda,
        (torch.cuda, "FloatTensor"): torch.cuda.FloatTensor,
        (torch.hub, "load_state_dict_from_url"): torch.hub.load_state_dict_from_url,
    }
    if not cuda:
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        torch.cuda.FloatTensor = torch.FloatTensor  # type: ignore[attr-defined]
    torch.hub.load_state_dict_from_url = lambda *a, **k: {}  # random start, as rvsl's
    added = _stand_ins(PLOT_ONLY_MODULES)
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for (owner, attr), value in saved.items():
            setattr(owner, attr, value)
        for name in added + [m for m in list(sys.modules) if m.split(".")[0] in OFFICIAL_MODULES]:
            sys.modules.pop(name, None)


def official_trainer(stage: int, args: argparse.Namespace, num_classes: int, out: Path) -> Any:
    """The authors' trainer object of ``stage``, built as their ``train()`` builds it, on their
    FVRID config with the benchmark's backbone and image size."""
    from config import cfg as base  # the authors' config module, from --official-root

    cfg = base.clone()
    cfg.merge_from_file(str(args.official_root / "configs" / "FVRID.yml"))
    settings = {
        "MODEL.NAME": OFFICIAL_BACKBONE[args.backbone],
        "INPUT.SIZE_TRAIN": [args.size, args.size],
        "SOLVER.FP16": False,  # their fp16 needs NVIDIA apex: float32 on both sides
        "OUTPUT_DIR": str(out),
        "TEST.VIS": False,
    }
    cfg.merge_from_list([item for pair in settings.items() for item in pair])
    cfg.freeze()
    losses = importlib.import_module("losses")
    models = importlib.import_module("models")
    if stage == 1:
        trainer_module = importlib.import_module("stage1_trainer")
        model = models.build_Stage1_Model(cfg, num_classes)
        disc_c = losses.Loss_discriminator(cfg)
        disc_f = losses.Loss_discriminator(cfg)
        return trainer_module.STAGE1_Trainer(
            cfg,
            model,
            [None],
            [],
            losses.Loss_stage1_reid(cfg, num_classes),
            losses.Loss_stage1_generator(cfg),
            losses.Loss_stage1_ea(cfg),
            *disc_c,
            *disc_f,
            0,
            1,
        )
    trainer_module = importlib.import_module("stage3_trainer")
    model = models.build_Stage3_Model(cfg, num_classes)
    return trainer_module.STAGE3_Trainer(
        cfg,
        model,
        [None],
        [None],
        [],
        losses.Lstage3_reid_sup(cfg, num_classes),
        losses.Lstage3_reid_ea(cfg),
        losses.Lstage3_gan_uns(cfg),
        losses.Lstage3_gan_sup(cfg),
        *losses.Loss_discriminator(cfg),
        0,
        1,
    )


def official_step(stage: int, trainer: Any, syn: dict, real: dict) -> Callable[[], None]:
    """One step of their training loop: ``step`` then ``handle_new_batch``."""

    def step() -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # its first step prints D scores
            if stage == 1:
                trainer.step(syn)
            else:
                trainer.step(syn, real)
            trainer.handle_new_batch()

    return step


# ---------------------------------------------------------------------------- rvsl's side
def rvsl_config(stage: int, args: argparse.Namespace, num_classes: int, out: Path) -> Any:
    """The ``train`` config rvsl-train composes: the stage, ``recipe=paper``, the benchmark's
    sizes, random weights, float32, then ``--rvsl`` overrides."""
    base = [
        "~experiment",
        f"stage={STAGES[stage]}",
        "recipe=paper",
        f"trainer={'gpu' if args.device == 'cuda' else 'cpu'}",
        "trainer.precision=32-true",  # as the official code without apex; --rvsl to change
        f"paths.output_dir={out}",
        f"paths.log_dir={out}",
        "seed=0",
        f"model.net.backbone={args.backbone}",
        f"model.net.num_classes={num_classes}",
        "model.pretrained=scratch",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    with initialize_config_module(config_module="rvsl.conf", version_base="1.3"):
        return compose(config_name="train", overrides=base + list(args.rvsl))


class Lockstep(pl.Callback):
    """Makes Lightning's training loop step when told: waits for a command before each batch,
    answers with the step's measurements after it, then waits again until the other side has
    stepped, so that Lightning's own work between batches (and its teardown after the last)
    never runs during the other side's step."""

    def __init__(self, conn: Connection, meter: CpuMeter) -> None:
        self.conn, self.meter = conn, meter
        self._start: tuple | None = None
        self._counter: FlopCounterMode | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.conn.recv() == COUNT:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self._start = self.meter.snapshot()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        span = self.meter.span(self._start, self.meter.snapshot())
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            span["flops"] = float(self._counter.get_total_flops())
            self._counter = None
        self.conn.send(span)
        if self.conn.recv() != RESUME:
            raise RuntimeError("lockstep: expected the parent to resume this side")


def rvsl_side(conn: Connection, stage: int, args: argparse.Namespace, malloc: str) -> None:
    """rvsl's process: rvsl-train's start-up settings, the model and Trainer it builds, and
    ``warmup + steps`` training steps, each when the parent says so."""
    _quiet()
    num_classes = NUM_CLASSES
    with tempfile.TemporaryDirectory(prefix="bench_vs_official_") as tmp:
        cfg = rvsl_config(stage, args, num_classes, Path(tmp))
        if malloc == "shipped":
            apply_host_settings(cfg)
        elif malloc == "keep":
            keep_freed_memory()
        pl.seed_everything(0, verbose=False)
        model = build_model(cfg, num_classes)
        steps = args.warmup + args.steps
        trainer = build_trainer(
            cfg.trainer,
            logger=False,
            enable_checkpointing=False,
            callbacks=[Lockstep(conn, CpuMeter(cuda=args.device == "cuda"))],
            limit_train_batches=steps,
        )
        batch = rvsl_batch(make_batch(args, num_classes))
        conn.send(READY)
        trainer.fit(model, train_dataloaders=DataLoader(Repeat(batch, steps), batch_size=None))


def official_side(conn: Connection, stage: int, args: argparse.Namespace, malloc: str) -> None:
    """The authors' process: their trainer object, stepped when the parent says so."""
    _quiet()
    if malloc == "keep":
        keep_freed_memory()
    meter = CpuMeter(cuda=args.device == "cuda")
    with (
        authors_code(args.official_root, args.device == "cuda"),
        tempfile.TemporaryDirectory() as tmp,
    ):
        torch.manual_seed(0)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the backbone's name
            trainer = official_trainer(stage, args, NUM_CLASSES, Path(tmp))
        step = official_step(stage, trainer, *official_batches(make_batch(args, NUM_CLASSES)))
        conn.send(READY)
        while (command := conn.recv()) != QUIT:
            counter = FlopCounterMode(display=False) if command == COUNT else None
            with counter if counter is not None else contextlib.nullcontext():
                start = meter.snapshot()
                step()
                span = meter.span(start, meter.snapshot())
            if counter is not None:
                span["flops"] = float(counter.get_total_flops())
            conn.send(span)


def run_stage(stage: int, args: argparse.Namespace, peak: tuple[str, float]) -> dict:
    """Both sides of one stage in turns: warm-up steps (the last one counts FLOPs), then the
    measured ones; the summary row."""
    context = mp.get_context("spawn")  # fresh interpreters: no state shared between the sides
    sides, links = {}, {}
    for name, target in (("rvsl", rvsl_side), ("official", official_side)):
        parent, child = context.Pipe()
        sides[name] = context.Process(target=target, args=(child, stage, args, args.malloc))
        links[name] = parent
        sides[name].start()
        child.close()  # a side that dies then reads as EOFError here, not as a hang
    rows: dict[str, list[dict[str, float]]] = {"rvsl": [], "official": []}
    flops: dict[str, float] = {}
    try:
        for name, link in links.items():
            if link.recv() != READY:
                raise RuntimeError(f"the {name} side did not start")
        for i in range(args.warmup + args.steps):
            for name, link in links.items():  # in turns: the other side waits, blocked
                link.send(COUNT if i == args.warmup - 1 else STEP)
                span = link.recv()
                if "flops" in span:
                    flops[name] = span["flops"]
                if i >= args.warmup:
                    rows[name].append(span)
            links["rvsl"].send(RESUME)  # Lightning's work between batches, alone
        links["official"].send(QUIT)
    finally:
        for process in sides.values():
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    return summarise(stage, rows, flops, peak, args)


def summarise(
    stage: int, rows: dict[str, list[dict]], flops: dict[str, float], peak: tuple[str, float], args
) -> dict:
    row: dict[str, Any] = {"stage": stage, "name": STAGES[stage], "peak_dtype": peak[0]}
    row["peak_gflops"] = peak[1]
    for side, spans in rows.items():
        seconds = float(np.median([r["seconds"] for r in spans]))
        count = flops.get(side)
        row[side] = {
            "median_s": seconds,
            "steps_s": [r["seconds"] for r in spans],
            "gflop": count / 1e9 if count else None,
            "peak_fraction": count / seconds / 1e9 / peak[1] if count else None,
            "minor_faults": float(np.median([r["minor_faults"] for r in spans])),
            "kernel_s": float(np.median([r["kernel_seconds"] for r in spans])),
            "others_cores_max": max(r["others_cores"] for r in spans),
            "noisy_steps": sum(r["others_cores"] > args.max_others for r in spans),
        }
    row["speedup"] = row["official"]["median_s"] / row["rvsl"]["median_s"]
    return row


# ---------------------------------------------------------------------------- report
def report(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        (
            f"{args.backbone} at {args.size}x{args.size}, P x K = {args.ids} x {args.instances},"
            f" {args.real} real images in stage 3, on {args.device} ({torch.get_num_threads()}"
            " CPU threads);"
            f" median of {args.steps} alternating steps after {args.warmup} warm-up;"
            f" rvsl overrides: {' '.join(args.rvsl) or 'none'}; malloc: {args.malloc}"
        ),
        "",
        (
            "| stage | side | s/step | GFLOP | % of matmul peak | minor faults | kernel s "
            "| others' cores (max) | noisy steps |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for side in ("rvsl", "official"):
            r = row[side]
            gflop = f"{r['gflop']:.1f}" if r["gflop"] else "n/a"
            frac = f"{100 * r['peak_fraction']:.1f}" if r["peak_fraction"] else "n/a"
            lines.append(
                f"| {row['stage']} {row['name']} | {side} | {r['median_s']:.3f} | {gflop} | "
                f"{frac} | {r['minor_faults']:.0f} | {r['kernel_s']:.3f} | "
                f"{r['others_cores_max']:.2f} | {r['noisy_steps']} |"
            )
    lines.append("")
    lines.append(
        f"{rows[0]['peak_dtype']} matmul peak of this run: {rows[0]['peak_gflops']:.1f} GFLOP/s"
    )
    for row in rows:
        lines.append(
            f"stage {row['stage']}: rvsl is {row['speedup']:.2f}x the official step's speed"
        )
    return "\n".join(lines)


def _quiet() -> None:
    """bench_train's quiet Lightning, and no warnings from the authors' older torch idioms."""
    quiet_lightning()
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> list[dict] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-root", type=Path, help="the authors' RVSL/ folder")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 3], choices=list(STAGES))
    parser.add_argument("--backbone", default="resnet50_ibn_a", choices=list(OFFICIAL_BACKBONE))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", type=int, default=128, help="training H = W (128)")
    parser.add_argument("--ids", type=int, default=2, help="identities per batch, P (2)")
    parser.add_argument("--instances", type=int, default=4, help="pairs per identity, K (4)")
    parser.add_argument("--real", type=int, default=18, help="real images in stage 3 (18)")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per side (8)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per side (2)")
    parser.add_argument("--max-others", type=float, default=0.1, help="noisy step: cores used")
    parser.add_argument(
        "--malloc",
        choices=MALLOC,
        default="shipped",
        help="shipped: each side as its command runs (rvsl keeps freed memory on CPU); "
        "keep / default: both sides alike",
    )
    parser.add_argument("--rvsl", nargs="*", default=[], help="Hydra overrides for rvsl's side")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.official_root is None:
        print("skipped: no --official-root given (the folder of the authors' stage1_trainer.py)")
        return None
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the FLOPs are counted in the last warm-up step)")
    args.official_root = args.official_root.resolve()
    check_official_root(args.official_root)
    _quiet()
    peak = matmul_peak_gflops(args.device)
    rows = []
    for stage in args.stages:
        rows.append(run_stage(stage, args, peak))
        print(f"stage {stage} done", file=sys.stderr)
    text = report(rows, args)
    print(text)
    if args.json:
        settings = vars(args) | {"official_root": str(args.official_root), "json": str(args.json)}
        args.json.write_text(json.dumps({"args": settings, "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
