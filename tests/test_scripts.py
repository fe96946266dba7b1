"""The benchmark scripts run and report sane figures (at toy sizes: they are measured elsewhere)."""

from __future__ import annotations

import json
import time
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


def test_bench_search_checks_flat_against_the_float64_brute_force(tmp_path):
    import bench_search

    report = bench_search.main(
        ["--sizes", "2000", "--dim", "64", "--queries", "20", "--nlist", "16",
         "--out", str(tmp_path / "search.json")]
    )  # fmt: skip
    (size,) = report["sizes"]
    rows = {row["method"]: row for row in size["rows"]}
    assert set(rows) == {"flat", "torch", "numpy", "ivf", "hnsw"}
    assert size["checks"]["flat"]["max_rel_diff"] <= 1e-4 and rows["ivf"]["trained"]
    assert rows["ivf"]["recall_at_k"] >= 0.9 and rows["hnsw"]["recall_at_k"] >= 0.9


def test_bench_embed_engine_times_the_old_reidentifier_path_against_the_engine(tmp_path):
    import bench_embed_engine

    out = tmp_path / "embed.json"
    report = bench_embed_engine.main(
        ["--quick", "--configs", "demo", "--images", "8", "--batch-size", "4", "--out", str(out)]
    )
    (config,) = report["configs"]
    rows = {(row["method"], row["workers"]): row for row in config["rows"]}
    assert set(rows) == {("old", None), ("reidentifier", 0), ("reidentifier", 2),
                         ("search engine", 0), ("search engine", 2)}  # fmt: skip
    assert all(row["images_per_s"] > 0 for row in rows.values())
    assert rows["reidentifier", 0]["max_abs_diff_vs_old"] == 0.0  # the same features
    assert rows["reidentifier", 2]["max_abs_diff_vs_old"] == 0.0
    assert json.loads(out.read_text())["configs"][0]["image_size"] == [64, 64]


def test_the_haze_threshold_is_the_fewest_errors_and_the_mixed_gallery_holds_each_shot_once(
    tmp_path,
):
    import search_branch_choice as choice

    clear, hazy = torch.tensor([0.05, 0.1, 0.2, 0.3]), torch.tensor([0.25, 0.4, 0.5])
    threshold, error = choice.pick_threshold(clear, hazy)
    assert 0.2 < threshold < 0.25 and error == pytest.approx(1 / 7)  # 0.3 is clear but hazy-looking
    for folder, condition in (
        ("FVRID_clear/query_clear", "clear"),
        ("FVRID_real/query_foggy", "hazy"),
    ):
        (tmp_path / folder).mkdir(parents=True)
        for name in ("0001_c1_000.jpg", "0001_c2_000.jpg", "0002_c1_000.jpg", "0002_c3_001.jpg"):
            (tmp_path / folder / name).write_text(condition)
    paths, is_hazy = choice.mixed_split(tmp_path, "query")
    assert sorted(Path(p).name for p in paths) == sorted(
        ["0001_c1_000.jpg", "0001_c2_000.jpg", "0002_c1_000.jpg", "0002_c3_001.jpg"]
    )
    assert [Path(p).read_text() == "hazy" for p in paths] == is_hazy


def test_the_side_by_side_with_the_official_code_is_skipped_without_its_folder(capsys, tmp_path):
    import bench_vs_official

    assert bench_vs_official.main([]) is None
    assert "skipped: no --official-root given" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"has no stage1_trainer\.py"):
        bench_vs_official.main(["--official-root", str(tmp_path)])


def test_the_side_by_side_reports_medians_the_flop_rate_and_noisy_steps():
    import argparse

    import bench_vs_official

    def span(seconds, others=0.0):
        return {"seconds": seconds, "others_cores": others, "kernel_seconds": 0.1,
                "minor_faults": 10}  # fmt: skip

    rows = {
        "rvsl": [span(2.0), span(1.0), span(3.0, others=0.5)],
        "official": [span(3.0), span(3.0), span(6.0)],
    }
    args = argparse.Namespace(max_others=0.1)
    row = bench_vs_official.summarise(
        1, rows, {"rvsl": 100e9, "official": 120e9}, ("float32", 100.0), args
    )
    assert row["rvsl"]["median_s"] == 2.0 and row["official"]["median_s"] == 3.0
    assert row["speedup"] == 1.5  # official seconds / rvsl seconds
    assert row["rvsl"]["peak_fraction"] == pytest.approx(0.5)  # 50 GFLOP/s of 100
    assert row["rvsl"]["noisy_steps"] == 1 and row["official"]["noisy_steps"] == 0


def test_the_authors_plot_only_imports_get_stand_ins_that_fail_only_when_used(monkeypatch):
    import sys

    import bench_vs_official

    monkeypatch.delitem(sys.modules, "no_such_plotting_lib", raising=False)
    added = bench_vs_official._stand_ins(("no_such_plotting_lib",))
    try:
        assert added == ["no_such_plotting_lib"]
        from no_such_plotting_lib import figure  # importing works

        with pytest.raises(RuntimeError, match="not installed"):
            figure()
    finally:
        sys.modules.pop("no_such_plotting_lib", None)


def test_a_step_breakdown_splits_the_profiled_time_into_named_groups():
    import bench_train

    conv = torch.nn.Conv2d(3, 8, 3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        start = time.perf_counter()
        conv(torch.rand(2, 3, 32, 32)).relu().sum().backward()
        seconds = time.perf_counter() - start
    groups = bench_train.time_breakdown(profile, seconds)
    assert groups["convolution forward"] > 0 and groups["convolution backward"] > 0
    assert groups["other operators"] > 0  # relu, sum, ...
    operators = sum(v for k, v in groups.items() if k != "outside operators")
    assert groups["outside operators"] == pytest.approx(max(0.0, seconds - operators))
    assert "convolution backward" in bench_train.format_breakdown(groups)
