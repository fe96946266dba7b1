"""The benchmark scripts run and report sane figures (at toy sizes: they are measured elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
