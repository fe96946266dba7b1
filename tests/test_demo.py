"""`make demo` in miniature: the real demo experiment on a tiny world, end to end."""

from __future__ import annotations

import json
from pathlib import Path

from rvsl.engine.chain import run


def test_the_demo_chain_builds_its_world_trains_every_stage_and_reports(compose_train, tmp_path):
    cfg = compose_train(
        "experiment=demo",
        "data=demo",
        f"data.root={tmp_path / 'world'}",
        "data.world_scale=0.1",
        "data.image_size=[32,32]",
        "data.batch_size=8",
        "data.real_batch_size=8",
        "chain=[{stage:baseline,max_epochs:1},{stage:syn_haze,max_epochs:1},"
        "{stage:real_clear,max_epochs:1},{stage:real_haze,max_epochs:1}]",
    )
    result = run(cfg)

    assert (tmp_path / "world" / "world.json").is_file()
    root = Path(cfg.paths.output_dir)
    rows = json.loads((root / "summary.json").read_text())
    stages = ["baseline", "syn_haze", "real_clear", "real_haze"]
    assert [r["stage"] for r in rows[::6]] == stages  # 3 test sets x 2 branches per stage
    assert all(0 <= r["mAP"] <= 100 for r in rows)
    syn_rows = [r for r in rows if r["test_set"] == "SYN" and r["stage"] != "baseline"]
    assert all(0 < r["ssim"] <= 1 and r["psnr"] > 0 for r in syn_rows)
    for stage in stages:
        assert (root / stage / "pictures" / "rank_list_REAL_FOGGY.png").is_file()
    assert (root / "real_haze" / "pictures" / "dehazing_SYN.png").is_file()
    assert result["best_model_score"] is not None
