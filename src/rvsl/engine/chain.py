"""Several stages in one command: ``chain: [baseline, syn_haze, real_clear, real_haze]``.

An entry is a stage name or ``{stage: NAME, max_epochs: N}``. Each RVSL stage starts from
the previous RVSL stage's best checkpoint (METHOD.md); the baseline trains on its own.
Every stage is composed from the same configs and command-line overrides as a single-stage
run, with its own run sub-folder, and the chain ends with one comparison table (JSON and
Markdown) in the run folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rvsl.engine.train import train

log = logging.getLogger(__name__)
SUMMARY_SETS = ("REAL_FOGGY", "REAL_CLEAR", "SYN")
SUMMARY_METRICS = ("mAP", "rank1", "mINP")
_OWN_KEYS = ("stage=", "chain=", "init_from=", "paths.output_dir=")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one stage, or every stage of ``cfg.chain`` in order."""
    stages = cfg.get("chain")
    if not stages:
        return train(cfg)
    root = Path(cfg.paths.output_dir)
    user_overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(_OWN_KEYS)]
    init_from = cfg.get("init_from")
    results: dict[str, dict[str, Any]] = {}
    for entry in stages:
        stage, max_epochs = _parse_entry(entry)
        overrides = [*user_overrides, f"stage={stage}", f"paths.output_dir='{root / stage}'"]
        if max_epochs is not None:
            overrides.append(f"trainer.max_epochs={max_epochs}")
        if init_from and stage != "baseline":
            overrides.append(f"init_from='{init_from}'")
        log.info("chain: stage %s (%s)", stage, " ".join(overrides))
        stage_cfg = compose(config_name="train", overrides=overrides)
        metrics = train(stage_cfg)
        results[stage] = metrics
        if stage != "baseline" and metrics.get("best_model_path"):
            init_from = metrics["best_model_path"]
    summary = summarize(results)
    write_summary(summary, root)
    log.info("results of the chain:\n%s", to_markdown(summary))
    last = results[_parse_entry(stages[-1])[0]]
    return {"best_model_score": last.get("best_model_score"), "stages": results}


def _parse_entry(entry: Any) -> tuple[str, int | None]:
    """A chain entry: a stage name, or ``{stage: NAME, max_epochs: N}``."""
    if isinstance(entry, str):
        return entry, None
    if isinstance(entry, Mapping) and "stage" in entry and set(entry) <= {"stage", "max_epochs"}:
        epochs = entry.get("max_epochs")
        return str(entry["stage"]), None if epochs is None else int(epochs)
    raise ValueError(f"chain entry {entry!r}: expected a stage name or {{stage, max_epochs}}")


def summarize(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (stage, test set, branch) with mAP, rank-1 and mINP of the best checkpoint."""
    rows = []
    for stage, metrics in results.items():
        values = metrics.get("best") or metrics
        for name in SUMMARY_SETS:
            for branch in ("hazy", "clear"):
                key = f"val/{name}/{branch}"
                if f"{key}/mAP" not in values:
                    continue
                row = {"stage": stage, "test_set": name, "branch": branch}
                row |= {m: round(100 * values[f"{key}/{m}"], 2) for m in SUMMARY_METRICS}
                if name == "SYN" and "val/SYN/dehaze/ssim" in values and stage != "baseline":
                    row["ssim"] = round(values["val/SYN/dehaze/ssim"], 4)
                    row["psnr"] = round(values["val/SYN/dehaze/psnr"], 2)
                rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison table: ReID in %, dehazing SSIM/PSNR (dB) where measured."""
    header = (
        "| stage | test set | branch | mAP | rank-1 | mINP | SSIM | PSNR |\n"
        "|---|---|---|---:|---:|---:|---:|---:|"
    )
    lines = [
        f"| {r['stage']} | {r['test_set']} | {r['branch']} | {r['mAP']:.2f} | "
        f"{r['rank1']:.2f} | {r['mINP']:.2f} | {r.get('ssim', '')} | {r.get('psnr', '')} |"
        for r in rows
    ]
    return "\n".join([header, *lines])


def write_summary(rows: list[dict[str, Any]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(rows, indent=2))
    (folder / "summary.md").write_text(to_markdown(rows) + "\n")
