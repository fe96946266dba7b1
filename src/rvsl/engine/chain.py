"""Several stages in one command: ``chain: [baseline, syn_haze, real_clear, real_haze]``.

An entry is a stage name or ``{stage, name, max_epochs, overrides}``. Each RVSL stage starts from
the previous RVSL stage's best checkpoint (docs/method.md); the baseline trains on its own.
Every stage is composed from the same configs and command-line overrides as a single-stage
run, with its own run sub-folder, and the chain ends with one comparison table (JSON and
Markdown) in the run folder. ``ckpt_path=last`` with ``hydra.run.dir=`` the interrupted chain's
folder resumes each stage from its own ``last.ckpt``; stages that had not begun start afresh.
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

from rvsl.engine.train import LAST_CKPT, train

log = logging.getLogger(__name__)
SUMMARY_SETS = ("REAL_FOGGY", "REAL_CLEAR", "SYN")
SUMMARY_METRICS = ("mAP", "rank1", "mINP")
_OWN_KEYS = ("stage=", "chain=", "init_from=", "paths.output_dir=", "ckpt_path=")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one stage, or every stage of ``cfg.chain`` in order."""
    stages = cfg.get("chain")
    if not stages:
        return train(cfg)
    root = Path(cfg.paths.output_dir)
    user_overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(_OWN_KEYS)]
    init_from = cfg.get("init_from")
    ckpt_path = cfg.get("ckpt_path")
    results: dict[str, dict[str, Any]] = {}
    for entry in stages:
        stage, name, extra = _parse_entry(entry)
        overrides = [*user_overrides, f"stage={stage}", f"paths.output_dir='{root / name}'"]
        overrides += extra
        if ckpt_path == "last":  # resume: stages after the interrupted one start afresh
            if not results or (root / name / LAST_CKPT).is_file():
                overrides.append("ckpt_path=last")
        elif ckpt_path:
            overrides.append(f"ckpt_path='{ckpt_path}'")
        if init_from and stage != "baseline":
            overrides.append(f"init_from='{init_from}'")
        log.info("chain: %s (%s)", name, " ".join(overrides))
        stage_cfg = compose(config_name="train", overrides=overrides)
        metrics = train(stage_cfg)
        results[name] = metrics
        if stage != "baseline" and metrics.get("best_model_path"):
            init_from = metrics["best_model_path"]
    summary = summarize(results)
    write_summary(summary, root)
    log.info("results of the chain:\n%s", to_markdown(summary))
    last = results[_parse_entry(stages[-1])[1]]
    return {"best_model_score": last.get("best_model_score"), "stages": results}


def _parse_entry(entry: Any) -> tuple[str, str, list[str]]:
    """(stage, name, extra overrides) of a chain entry: a stage name, or a mapping with
    ``stage`` and optionally ``name`` (folder and table label), ``max_epochs`` and
    ``overrides`` (a list of Hydra overrides for this entry only)."""
    if isinstance(entry, str):
        return entry, entry, []
    allowed = {"stage", "name", "max_epochs", "overrides"}
    if not isinstance(entry, Mapping) or "stage" not in entry or not set(entry) <= allowed:
        raise ValueError(
            f"chain entry {entry!r}: expected a stage name or a mapping with keys {sorted(allowed)}"
        )
    extra = [str(o) for o in entry.get("overrides") or []]
    if entry.get("max_epochs") is not None:
        extra.append(f"trainer.max_epochs={int(entry['max_epochs'])}")
    return str(entry["stage"]), str(entry.get("name") or entry["stage"]), extra


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
