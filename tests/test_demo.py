"""`make demo` in miniature: the real demo experiment on a tiny world, end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import hydra

from rvsl.training.chain import run


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
        "data.val_identities=3",
        "chain=[{stage:baseline,name:clear_only,max_epochs:1,"
        "overrides:['model.baseline_domains=[clear]']},"
        "{stage:baseline,from:clear_only,max_epochs:1},"
        "{stage:adabn,name:baseline_adabn,from:baseline,batches:2},"
        "{stage:syn_haze,from:clear_only,max_epochs:1},"
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
    summary = json.loads((root / "summary.json").read_text())
    rows = summary["rows"]
    trained = ["clear_only", "baseline", "syn_haze", "real_clear", "real_haze"]
    assert [r["model"] for r in rows] == [*trained[:2], "baseline_adabn", *trained[2:]]
    assert summary["roles"] == {
        "clear_only": "clear_only", "baseline": "baseline",
        "adabn": "baseline_adabn", "rvsl": "real_haze",
    }  # fmt: skip
    # every test set, the held-out haze included, once on each model's final weights
    test_sets = {"SYN", "REAL_CLEAR", "REAL_FOGGY", "REAL_HELDOUT", "VAL"}
    assert all(set(r["hazy"]) == test_sets for r in rows)
    assert all(0 <= v["mAP"] <= 1 for r in rows for v in r["hazy"].values())
    assert all(r["selection"].startswith("last epoch") for r in rows if r["stage"] != "adabn")
    dehazers = [r["dehaze"] for r in rows if r["stage"] in ("syn_haze", "real_clear", "real_haze")]
    assert len(dehazers) == 3 and all(0 < d["ssim"] <= 1 and d["psnr"] > 0 for d in dehazers)
    for stage in trained:
        assert (root / stage / "pictures" / "rank_list_REAL_FOGGY.png").is_file()
    assert (root / "real_haze" / "pictures" / "dehazing_SYN.png").is_file()
    for picture in ("summary.png", "val_curves.png", "rank_list_baseline_vs_rvsl.png"):
        assert (root / picture).is_file()
    # each stage reports the checkpoint its selection rule picked (never a test set's best)
    assert all(Path(m["selected_model_path"]).is_file() for m in result["stages"].values())
