"""`make demo` in miniature: the real demo experiment on a tiny world, end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import hydra

from rvsl.engine.chain import run


def file_hashes(folder: Path) -> dict[Path, str]:
    """SHA-256 of every file under ``folder``."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_the_demo_chain_builds_its_world_trains_every_stage_and_reports(
    compose_train, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory shows up
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
    hydra.utils.instantiate(cfg.data)  # builds the world: the data cache
    assert (tmp_path / "world" / "world.json").is_file()
    before = file_hashes(tmp_path)

    result = run(cfg)

    root = Path(cfg.paths.output_dir)
    after = file_hashes(tmp_path)
    assert {p: after.get(p) for p in before} == before  # no data file changed or vanished
    written_elsewhere = [p for p in after if p not in before and root not in p.parents]
    assert written_elsewhere == []  # training writes only into its run folder
    rows = json.loads((root / "summary.json").read_text())["rows"]
    stages = ["baseline", "syn_haze", "real_clear", "real_haze"]
    assert [r["model"] for r in rows] == stages  # one row per model
    assert all({"SYN", "REAL_CLEAR", "REAL_FOGGY"} <= set(r["hazy"]) for r in rows)
    assert all(0 <= v["mAP"] <= 100 for r in rows for v in r["hazy"].values())
    dehazers = [r["dehaze"] for r in rows if r["stage"] != "baseline"]
    assert len(dehazers) == 3 and all(0 < d["ssim"] <= 1 and d["psnr"] > 0 for d in dehazers)
    for stage in stages:
        assert (root / stage / "pictures" / "rank_list_REAL_FOGGY.png").is_file()
    assert (root / "real_haze" / "pictures" / "dehazing_SYN.png").is_file()
    # each stage reports the checkpoint its selection rule picked (never a test set's best)
    assert all(Path(m["selected_model_path"]).is_file() for m in result["stages"].values())
