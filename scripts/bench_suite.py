"""The performance suite behind ``make bench``: every benchmark script, one JSON file.

Sections (each runs a script of this folder in its own process, so one failing section is
recorded and the rest still run):

- ``matmul``: this machine's matrix-multiply peak per dtype (``bench_matmul.py``).
- ``training``: throughput of each stage through the real Trainer and DataLoader
  (``bench_train.py``): demo size (ResNet-18-IBN-a, 64x64) and ResNet-50-IBN-a at 128x128 on
  CPU, at 384x384 (the paper's size and batch) on a GPU. Per row: pairs/s, data-wait share,
  peak memory, FLOPs of a step and the achieved FLOP rate as a fraction of the matmul peak
  (fp32 runs against the fp32 peak, or TF32 on GPUs, where cuDNN convolutions use TF32;
  bf16 runs against the bf16 peak).
- ``options``: each speed option on and off, one variable at a time, stage 3 (real_haze):
  ``trainer.precision=bf16-mixed``, ``model.channels_last``, ``model.compile``,
  ``data.num_workers``, ``data.pin_memory``; and ``ddp``: one process under the DDP strategy
  of ``trainer=ddp`` (``find_unused_parameters=True``) against none, measured back to back in
  one call. The plain run is measured at the start and again at the end; their ratio says how
  noisy the machine was.
- ``network``: the bare network's evaluation and stage-1 step throughput (``bench_model.py``).
- ``evaluation``: ``evaluate_rank`` against the per-query loop, re-ranking, and embedding
  throughput in PyTorch and ONNX Runtime (``bench_eval.py``).

    python scripts/bench_suite.py [--device cpu|cuda] [--out FILE.json] [--only SECTION ...]
        [--quick]

On the 2-core CPU machine the full suite takes about 18 minutes; ``--quick`` (toy sizes, for
the tests) well under two. Without ``--out`` the JSON goes to
``outputs/bench/bench-<device>-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

SCRIPTS = Path(__file__).resolve().parent
SECTIONS = ("matmul", "training", "options", "network", "evaluation")
STAGES = ("baseline", "syn_haze", "real_clear", "real_haze")
OPTION_STAGE = "real_haze"


@dataclass(frozen=True)
class Plan:
    """What each section runs on one kind of machine."""

    matmul_args: list[str]
    training: dict[str, list[str]]  # config -> bench_train.py arguments
    options_config: str
    options_steps: int
    base_workers: int  # DataLoader workers of the plain options run
    base_pin_memory: bool  # pinned batches in the plain options run (data=fvrid pins on GPUs)
    worker_options: tuple[int, int]  # data.num_workers off, on
    option_names: tuple[str, ...]
    network_args: list[str] | None
    evaluation_args: list[str]
    # a bf16 matmul below this fraction of fp32 has no fast kernels here: measure the
    # precision option at ``slow_bf16_config`` instead of ``options_config`` (minutes per step)
    slow_bf16_fraction: float = 0.25
    slow_bf16_config: str = "tiny"
    notes: list[str] = field(default_factory=list)


QUICK_EVALUATION = ["--num-query", "60", "--num-gallery", "600", "--num-ids", "30"]
QUICK_EVALUATION += ["--repeats", "1", "--only", "rank"]
OPTIONS = ("precision", "channels_last", "compile", "num_workers", "pin_memory", "ddp")


def plan_for(device: str, quick: bool) -> Plan:
    if quick:  # toy sizes: seconds per section
        return Plan(
            matmul_args=["--size", "256", "--target-seconds", "0.01"],
            training={"tiny": ["--stages", "syn_haze", "--steps", "1", "--num-workers", "0"]},
            options_config="tiny",
            options_steps=1,
            base_workers=0,
            base_pin_memory=False,
            worker_options=(0, 1),
            option_names=("channels_last", "ddp"),
            network_args=None,
            evaluation_args=QUICK_EVALUATION,
        )
    if device == "cuda":
        return Plan(
            matmul_args=[],
            training={
                "demo": ["--steps", "20", "--num-workers", "4", "--pin-memory"],
                "r50_384": ["--steps", "10", "--num-workers", "8", "--pin-memory"],
            },
            options_config="r50_384",
            options_steps=10,
            base_workers=8,
            base_pin_memory=True,
            worker_options=(0, 8),
            option_names=OPTIONS,
            network_args=["--iters", "10"],
            evaluation_args=[],
        )
    workers = min(2, os.cpu_count() or 1)
    return Plan(
        matmul_args=[],
        training={
            "demo": ["--steps", "3", "--num-workers", "0"],
            "r50": ["--steps", "1", "--num-workers", "0"],
        },
        options_config="demo",
        options_steps=3,
        base_workers=0,
        base_pin_memory=False,
        worker_options=(0, workers),
        option_names=OPTIONS,
        network_args=["--iters", "2"],
        evaluation_args=[],
    )


# ---------------------------------------------------------------------------- running scripts
class SectionError(RuntimeError):
    pass


def run_script(script: str, args: list[str], work: Path) -> dict[str, Any]:
    """``python scripts/<script> *args --json F``; its output streams through; returns F."""
    out = work / f"{script.removesuffix('.py')}-{time.monotonic_ns()}.json"
    command = [sys.executable, str(SCRIPTS / script), *args, "--json", str(out)]
    print(f"\n$ {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, check=False)
    if done.returncode != 0 or not out.is_file():
        raise SectionError(f"{script} {' '.join(args)} exited with {done.returncode}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------- sections
def matmul_section(plan: Plan, device: str, work: Path) -> dict[str, Any]:
    return run_script("bench_matmul.py", ["--device", device, *plan.matmul_args], work)


def peak_reference(row: dict[str, Any], device: str) -> str:
    """The matmul dtype a training row's FLOP rate is compared with."""
    if row["precision"].startswith("bf16"):
        return "bfloat16"
    return "tf32" if device == "cuda" else "float32"  # cuDNN convolutions use TF32 by default


def with_peak_fraction(
    rows: list[dict[str, Any]], peaks: dict[str, Any] | None, device: str
) -> list[dict[str, Any]]:
    """Each row plus ``peak_reference`` and ``peak_fraction`` (achieved / measured peak)."""
    for row in rows:
        reference = peak_reference(row, device)
        peak = (peaks or {}).get(reference, {}).get("gflops")
        row["peak_reference"] = reference
        achieved = row.get("achieved_gflops")
        row["peak_fraction"] = achieved / peak if achieved and peak else None
    return rows


def training_section(
    plan: Plan, device: str, work: Path, data_dir: Path, peaks: dict | None
) -> list[dict[str, Any]]:
    rows = []
    for config, args in plan.training.items():
        common = ["--device", device, "--data-dir", str(data_dir), "--configs", config]
        rows += run_script("bench_train.py", [*common, *args], work)["rows"]
    return with_peak_fraction(rows, peaks, device)


def _plain(plan: Plan) -> dict[str, Any]:
    """The plain options run's settings: every option at its off value."""
    return {
        "config": plan.options_config,
        "workers": plan.base_workers,
        "pin_memory": plan.base_pin_memory,
    }


def _option_runs(plan: Plan, device: str, peaks: dict | None) -> dict[str, tuple[dict, dict]]:
    """option -> (off, on) bench_train.py settings; ``config`` and ``workers`` included."""
    base = _plain(plan)
    runs: dict[str, tuple[dict, dict]] = {
        "precision": (base, {**base, "precision": "bf16-mixed"}),
        "channels_last": (base, {**base, "channels_last": True}),
        "compile": (base, {**base, "compile": True}),
        "num_workers": tuple({**base, "workers": w} for w in plan.worker_options),
        "pin_memory": ({**base, "pin_memory": False}, {**base, "pin_memory": True}),
        "ddp": ({**base, "ddp": True}, {**base, "ddp": True}),  # one call gives both rows
    }
    fp32 = (peaks or {}).get("float32", {}).get("gflops")
    bf16 = (peaks or {}).get("bfloat16", {}).get("gflops")
    slow_bf16 = fp32 and bf16 is not None and bf16 < plan.slow_bf16_fraction * fp32
    if device == "cpu" and "precision" in plan.option_names and slow_bf16:
        slow = {**base, "config": plan.slow_bf16_config}
        runs["precision"] = (slow, {**slow, "precision": "bf16-mixed"})
        plan.notes.append(
            f"bfloat16 matmul here runs at {bf16:.1f} GFLOP/s against {fp32:.0f} for float32 "
            f"(no bf16 kernels on this CPU): bf16-mixed was measured at the "
            f"{plan.slow_bf16_config} size, where a step takes seconds, not minutes"
        )
    return {name: runs[name] for name in plan.option_names}


def _train(
    settings: dict, plan: Plan, device: str, work: Path, data_dir: Path
) -> list[dict[str, Any]]:
    """bench_train.py's rows for one setting: one row; with ``ddp``, the plain run and then
    the same run under one-process DDP."""
    args = [
        "--device", device, "--data-dir", str(data_dir), "--configs", settings["config"],
        "--stages", OPTION_STAGE, "--steps", str(plan.options_steps),
        "--num-workers", str(settings["workers"]),
        "--precision", settings.get("precision", "32-true"),
    ]  # fmt: skip
    args += ["--channels-last"] if settings.get("channels_last") else []
    args += ["--compile"] if settings.get("compile") else []
    args += ["--pin-memory"] if settings.get("pin_memory") else []
    args += ["--ddp", "find_unused"] if settings.get("ddp") else []
    return run_script("bench_train.py", args, work)["rows"]


def options_section(
    plan: Plan, device: str, work: Path, data_dir: Path, peaks: dict | None
) -> dict[str, Any]:
    """Each option off and on; runs with identical settings are measured once and shared."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def measured(settings: dict) -> list[dict[str, Any]]:
        key = json.dumps(settings, sort_keys=True)
        if key not in cache:
            cache[key] = _train(settings, plan, device, work, data_dir)
        return cache[key]

    runs = _option_runs(plan, device, peaks)
    base = _plain(plan)
    (first_base,) = measured(base)
    results = []
    for name, (off_settings, on_settings) in runs.items():
        off, on = measured(off_settings)[0], measured(on_settings)[-1]
        results.append(
            {
                "option": name,
                "config": off["config"],
                "stage": OPTION_STAGE,
                "off": _option_value(name, off),
                "on": _option_value(name, on),
                "pairs_per_s_off": off["pairs_per_s"],
                "pairs_per_s_on": on["pairs_per_s"],
                "speedup": on["pairs_per_s"] / off["pairs_per_s"],
                "data_wait_pct_off": off["data_wait_pct"],
                "data_wait_pct_on": on["data_wait_pct"],
                "first_step_s_on": on["first_step_s"],
                "peak_memory_mib_off": _peak_memory(off),
                "peak_memory_mib_on": _peak_memory(on),
                "runs": [off, on],
            }
        )
    (again,) = _train(base, plan, device, work, data_dir)  # fresh: the noise yardstick
    return {
        "plain_run_repeat_ratio": again["pairs_per_s"] / first_base["pairs_per_s"],
        "results": results,
    }


def _option_value(name: str, row: dict[str, Any]) -> Any:
    column = {"num_workers": "num_workers", "ddp": "strategy"}.get(name, name)
    return row[column]


def _peak_memory(row: dict[str, Any]) -> float:
    return row.get("peak_cuda_mib", row["peak_rss_mib"])


def network_section(plan: Plan, device: str, work: Path) -> dict[str, Any]:
    return run_script("bench_model.py", ["--device", device, *plan.network_args], work)


def evaluation_section(plan: Plan, work: Path) -> dict[str, Any]:
    return run_script("bench_eval.py", plan.evaluation_args, work)


# ---------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def summary(report: dict[str, Any]) -> str:
    """A few lines a person reads: the figures the JSON holds in full."""
    lines = [f"bench suite on {report['device']}: {report['machine']['cpu']}"]
    lines += [f"  {report['machine']['gpu']}"] if "gpu" in report["machine"] else []
    peaks = report.get("matmul", {}).get("peaks", {})
    if peaks:
        lines.append(
            "matmul peak: " + ", ".join(f"{k} {v['gflops']:.0f} GFLOP/s" for k, v in peaks.items())
        )
    for row in report.get("training", []):
        fraction = row.get("peak_fraction")
        rate = (
            f"{row['achieved_gflops']:7.1f} GFLOP/s = {100 * fraction:4.1f}% of peak  "
            if fraction
            else ""
        )
        lines.append(
            f"train {row['config']:18} {row['stage']:10} {row['pairs_per_s']:7.1f} pairs/s  "
            f"data wait {row['data_wait_pct']:4.1f}%  {rate}peak {_peak_memory(row):.0f} MiB"
        )
    options = report.get("options", {})
    for row in options.get("results", []):
        lines.append(
            f"option {row['option']:13} {row['off']!s:>8} -> {row['on']!s:<10} "
            f"{row['pairs_per_s_off']:6.1f} -> {row['pairs_per_s_on']:6.1f} pairs/s "
            f"({row['speedup']:.2f}x, {row['config']})"
        )
    if "plain_run_repeat_ratio" in options:
        lines.append(f"plain run repeated: {options['plain_run_repeat_ratio']:.2f}x the first")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    for name, error in report.get("errors", {}).items():
        lines.append(f"FAILED {name}: {error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present")
    parser.add_argument("--out", help="the JSON file (default: outputs/bench/...)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke test)")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    plan = plan_for(device, args.quick)
    sections = list(args.only)
    if {"training", "options"} & set(sections) and "matmul" not in sections:
        sections.insert(0, "matmul")  # their FLOP rates (and the bf16 check) need the peak
    if device == "cpu" and "pin_memory" in plan.option_names and "options" in sections:
        plan.notes.append("pin_memory only takes effect with CUDA: on CPU both runs are alike")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"outputs/bench/bench-{device}-{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    report: dict[str, Any] = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "device": device,
        "quick": args.quick,
        "machine": machine(),
        "notes": plan.notes,
        "errors": {},
    }
    work = Path(tempfile.mkdtemp(prefix="bench_suite_"))
    data_dir = work / "data"
    try:
        steps = {
            "matmul": lambda: matmul_section(plan, device, work),
            "training": lambda: training_section(
                plan, device, work, data_dir, report.get("matmul", {}).get("peaks")
            ),
            "options": lambda: options_section(
                plan, device, work, data_dir, report.get("matmul", {}).get("peaks")
            ),
            "network": lambda: network_section(plan, device, work),
            "evaluation": lambda: evaluation_section(plan, work),
        }
        for name in sections:
            if name == "network" and plan.network_args is None:
                continue
            section_start = time.perf_counter()
            try:
                report[name] = steps[name]()
            except SectionError as err:
                report["errors"][name] = str(err)
            report.setdefault("section_seconds", {})[name] = time.perf_counter() - section_start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = time.perf_counter() - started
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + summary(report))
    print(f"\nwrote {out} ({report['wall_s'] / 60:.1f} min)")
    if report["errors"]:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
