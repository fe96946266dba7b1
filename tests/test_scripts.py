"""The benchmark scripts run and report sane figures (at toy sizes: they are measured elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).parents[1] / "scripts"


@pytest.fixture(autouse=True)
def scripts_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # as when a script runs: its folder comes first


def test_bench_eval_checks_evaluate_rank_against_the_loop_and_times_reranking(tmp_path):
    import bench_eval

    out = tmp_path / "eval.json"
    figures = bench_eval.main(
        ["--num-query", "60", "--num-gallery", "600", "--num-ids", "30", "--repeats", "1",
         "--only", "rank", "rerank", "--json", str(out)]
    )  # fmt: skip
    assert figures["rank"]["max_abs_diff"] == 0.0  # identical to the per-query loop
    assert figures["rank"]["speedup"] > 0
    assert figures["rerank"]["mAP_reranked"] >= figures["rerank"]["mAP_plain"] - 0.05
    assert out.is_file()


def test_bench_embed_compares_pytorch_and_onnx_runtime():
    import bench_embed

    row = bench_embed.bench("resnet18_ibn_a", (32, 32), batch=2, iters=1)
    assert row["torch_images_per_s"] > 0 and row["onnxruntime_images_per_s"] > 0
    assert row["max_abs_error"] < 1e-4


def test_bench_matmul_shrinks_the_matrices_for_a_dtype_without_fast_kernels(monkeypatch):
    import bench_matmul

    monkeypatch.setattr(bench_matmul, "matmul_flops_per_s", lambda *a, **k: 1e6)  # 1 MFLOP/s
    assert bench_matmul.fitted_size(8192, "bfloat16", torch.device("cpu"), 0.25) == 256
    monkeypatch.setattr(bench_matmul, "matmul_flops_per_s", lambda *a, **k: 1e15)
    assert bench_matmul.fitted_size(2048, "float32", torch.device("cpu"), 0.25) == 2048


def test_a_training_rows_flop_rate_is_compared_with_the_peak_of_its_own_precision():
    import bench_suite

    peaks = {"float32": {"gflops": 100.0}, "tf32": {"gflops": 400.0}, "bfloat16": {"gflops": 800.0}}
    rows = [
        {"precision": "32-true", "achieved_gflops": 50.0},
        {"precision": "bf16-mixed", "achieved_gflops": 200.0},
        {"precision": "32-true", "achieved_gflops": None},  # a compiled run: not counted
    ]
    cpu = bench_suite.with_peak_fraction([dict(r) for r in rows], peaks, "cpu")
    assert [r["peak_fraction"] for r in cpu] == [0.5, 0.25, None]
    gpu = bench_suite.with_peak_fraction([dict(r) for r in rows], peaks, "cuda")
    assert [r["peak_reference"] for r in gpu] == ["tf32", "bfloat16", "tf32"]
    assert gpu[0]["peak_fraction"] == 0.125


def test_the_suite_writes_one_json_with_every_section_it_ran(tmp_path):
    import bench_suite

    out = tmp_path / "suite.json"
    bench_suite.main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert {"machine", "matmul", "training", "options", "evaluation"} <= set(report)
    assert report["matmul"]["peaks"]["float32"]["gflops"] > 0
    (row,) = report["training"]
    assert row["stage"] == "syn_haze" and row["pairs_per_s"] > 0
    assert 0 <= row["data_wait_pct"] <= 100 and row["flops_per_step"] > 1e9
    assert 0 < row["peak_fraction"] < 2  # a step cannot beat the GEMM peak by much
    layout, ddp = report["options"]["results"]
    assert (layout["option"], layout["off"], layout["on"]) == ("channels_last", False, True)
    assert [run["channels_last"] for run in layout["runs"]] == [False, True]
    assert (ddp["option"], ddp["off"], ddp["on"]) == ("ddp", "single", "ddp (find_unused)")
    assert layout["speedup"] > 0 and ddp["speedup"] > 0
    assert report["options"]["plain_run_repeat_ratio"] > 0
    assert report["evaluation"]["rank"]["max_abs_diff"] == 0.0
