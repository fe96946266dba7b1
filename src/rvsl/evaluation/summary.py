"""The comparison a chain ends with: one row per model, a reading of the numbers, pictures.

``summary.md`` holds the hazy-branch table (mAP and rank-1 per test set, SSIM/PSNR of the
dehazer where measured), the clear-branch table of the two-branch (RVSL) models, how each
row's checkpoint was chosen, and one paragraph that reads this run's numbers: whether haze
hurts a model trained on clear images only, and what RVSL's stage 3 gains on REAL_FOGGY over
the baseline and over AdaBN, with the thresholds below deciding every verdict. ``summary.json``
keeps the same rows, the models each role was given to, the paragraph and the thresholds;
``summary.png`` charts the hazy-branch mAP. :func:`rank_list_comparison` draws the same
REAL_FOGGY queries ranked by the baseline and by RVSL.

Every mAP, rank-1 and mINP in the rows, in ``summary.json`` and in the thresholds is a fraction
in [0, 1] (rounded to :data:`DIGITS` decimals); the tables, the reading and the chart, which a
person reads, show them in percent and mAP points. SSIM is on its own [0, 1] scale, PSNR in dB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rvsl.evaluation.evaluate import percent, rank_lists_of
from rvsl.evaluation.pictures import captioned, grouped_bar_chart, save_png, side_by_side
from rvsl.models.checkpoint import load_net
from rvsl.utils.files import atomic_write

MAIN_SETS = ("REAL_CLEAR", "REAL_FOGGY", "SYN")  # then any other set measured (VAL, ...)
TARGET_SET = "REAL_FOGGY"
METRICS = ("mAP", "rank1", "mINP")  # kept in summary.json; the tables show mAP and rank-1
DIGITS = 4  # decimals kept of a fraction: 0.01 % (two decimals in percent)
RVSL_STAGES = ("syn_haze", "real_clear", "real_haze")
FALLBACK_SELECTION = "best checkpoint"  # what train() chose before it said how
# A relative mAP drop from REAL_CLEAR to REAL_FOGGY (clear-only model) that counts as haze
# hurting; a smaller change in either direction is reported as "barely matters".
HAZE_HURTS_DROP = 0.10
# The REAL_FOGGY mAP difference (a fraction: 0.01 is 1 mAP point) under which two models are
# reported as tied, not as a win.
TIE_MAP = 0.01
# An mAP change (a fraction) under which AdaBN counts as leaving the baseline unchanged.
NO_CHANGE_MAP = 0.0005
_SET_KEY = re.compile(r"^val/([^/]+)/hazy/mAP$")


@dataclass(frozen=True)
class ModelInfo:
    """What the summary needs to know of a chain entry besides its metrics.

    ``stage``: the entry's kind (``baseline``, an RVSL stage, ``adabn``); ``source``: the entry
    it started from when named with ``from``; ``clear_only``: a baseline that never saw haze;
    ``two_branches``: a network whose clear and hazy branches differ (RVSL, not the baseline).
    """

    stage: str
    source: str | None = None
    clear_only: bool = False
    two_branches: bool = False


def selected_model(metrics: Mapping[str, Any]) -> tuple[str | None, str]:
    """The checkpoint ``train()`` selected and the sentence saying how; from older results,
    which only name the best checkpoint, that one."""
    if metrics.get("selected_model_path"):
        return str(metrics["selected_model_path"]), str(metrics.get("selection") or "selected")
    path = metrics.get("best_model_path")
    return (str(path) if path else None), FALLBACK_SELECTION


# ------------------------------------------------------------------------------ rows
def evaluated_values(metrics: Mapping[str, Any]) -> Mapping[str, Any]:
    """The after-fit evaluation of the selected checkpoint, else the last logged values."""
    return metrics.get("best") or metrics


def measured_sets(values: Mapping[str, Any]) -> list[str]:
    """Test sets with a hazy-branch mAP: the main three in their order, then the others."""
    found = {m.group(1) for key in values if (m := _SET_KEY.match(key))}
    return [s for s in MAIN_SETS if s in found] + sorted(found - set(MAIN_SETS))


def branch_metrics(values: Mapping[str, Any], branch: str) -> dict[str, dict[str, float]]:
    """``{set: {mAP, rank1, mINP}}`` of one branch, fractions rounded to :data:`DIGITS`."""
    table = {}
    for name in measured_sets(values):
        key = f"val/{name}/{branch}"
        if f"{key}/mAP" in values:
            table[name] = {m: round(float(values[f"{key}/{m}"]), DIGITS) for m in METRICS}
    return table


def map_difference(ours: float, theirs: float) -> float:
    """``ours - theirs`` of two rounded fractions, without the float noise of the subtraction
    (0.11 - 0.10 is 0.01, a tie threshold reached, not 0.00999...)."""
    return round(ours - theirs, DIGITS)


def model_row(name: str, metrics: Mapping[str, Any], info: ModelInfo) -> dict[str, Any]:
    """One model's row: hazy-branch (and for RVSL models clear-branch) metrics, the dehazer's
    SSIM/PSNR where measured, and how its checkpoint was selected."""
    values = evaluated_values(metrics)
    checkpoint, selection = selected_model(metrics)
    row: dict[str, Any] = {
        "model": name,
        "stage": info.stage,
        "from": info.source,
        "clear_only": info.clear_only,
        "selection": selection,
        "checkpoint": checkpoint,
        "hazy": branch_metrics(values, "hazy"),
    }
    if info.two_branches:
        row["clear"] = branch_metrics(values, "clear")
    if "val/SYN/dehaze/ssim" in values:
        row["dehaze"] = {
            "ssim": round(float(values["val/SYN/dehaze/ssim"]), 4),
            "psnr": round(float(values["val/SYN/dehaze/psnr"]), 2),
        }
    return row


def target_map(row: Mapping[str, Any] | None) -> float | None:
    """A row's hazy-branch mAP on REAL_FOGGY, if measured."""
    if row is None:
        return None
    return row["hazy"].get(TARGET_SET, {}).get("mAP")


def comparison_roles(rows: list[dict[str, Any]]) -> dict[str, str | None]:
    """The rows the reading compares: the clear-only model, the baseline (trained on clear and
    hazy images), its AdaBN, RVSL stage 3 (the first real_haze entry without ``from``) and the
    ablations (other real_haze entries)."""
    baseline = _first(rows, lambda r: r["stage"] == "baseline" and not r["clear_only"])
    rvsl = _first(rows, lambda r: r["stage"] == "real_haze" and r["from"] is None)
    adabn = _first(rows, lambda r: r["stage"] == "adabn" and r["from"] == baseline)
    return {
        "clear_only": _first(rows, lambda r: r["clear_only"]),
        "baseline": baseline,
        "adabn": adabn or _first(rows, lambda r: r["stage"] == "adabn"),
        "rvsl": rvsl or _first(rows, lambda r: r["stage"] == "real_haze"),
    }


def _first(rows: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> str | None:
    return next((r["model"] for r in rows if keep(r)), None)


def summarize(
    results: Mapping[str, Mapping[str, Any]], models: Mapping[str, ModelInfo] | None = None
) -> dict[str, Any]:
    """``{"rows", "roles", "reading", "thresholds"}`` of a chain's results (entry name ->
    ``train()`` metrics); an entry without ``models`` information counts as its name's stage."""
    models = models or {}
    rows = [
        model_row(name, metrics, models.get(name) or default_info(name))
        for name, metrics in results.items()
    ]
    roles = comparison_roles(rows)
    return {
        "rows": rows,
        "roles": roles,
        "reading": reading(rows, roles),
        "thresholds": {"haze_hurts_relative_drop": HAZE_HURTS_DROP, "tie_map": TIE_MAP},
    }


def default_info(name: str) -> ModelInfo:
    """A model known by its name alone: a stage name, two branches for RVSL stages."""
    return ModelInfo(stage=name, two_branches=name in RVSL_STAGES)


# ------------------------------------------------------------------------------ reading
def haze_clause(row: Mapping[str, Any]) -> str | None:
    """Does haze hurt? The clear-only model on REAL_CLEAR versus REAL_FOGGY."""
    clear = row["hazy"].get("REAL_CLEAR", {}).get("mAP")
    foggy = target_map(row)
    if clear is None or foggy is None or clear <= 0:
        return None
    drop = (clear - foggy) / clear
    numbers = f"{percent(clear):.1f} mAP on REAL_CLEAR and {percent(foggy):.1f} on REAL_FOGGY"
    name = row["model"]
    if drop >= HAZE_HURTS_DROP:
        return (
            f"Haze hurts: the model trained on clear images only ({name}) scores {numbers}, "
            f"a {drop:.0%} relative drop."
        )
    if drop <= -HAZE_HURTS_DROP:
        return (
            f"Haze does not hurt here: the clear-only model ({name}) scores {numbers}, "
            f"{-drop:.0%} better on the hazy set (the two sets also differ in identities)."
        )
    return (
        f"Haze barely matters here: the clear-only model ({name}) scores {numbers}, a "
        f"{abs(drop):.0%} relative {'drop' if drop >= 0 else 'rise'}, within the "
        f"{HAZE_HURTS_DROP:.0%} this summary calls an effect."
    )


def gap_clause(rvsl: Mapping[str, Any], other: Mapping[str, Any], label: str) -> str | None:
    """RVSL stage 3 versus one other model on REAL_FOGGY, told in mAP points."""
    ours, theirs = target_map(rvsl), target_map(other)
    if ours is None or theirs is None:
        return None
    gap = map_difference(ours, theirs)
    numbers = f"({percent(ours):.1f} vs {percent(theirs):.1f}, {rvsl['model']} vs {other['model']})"
    if gap >= TIE_MAP:
        return (
            f"RVSL stage 3 beats {label} on {TARGET_SET} by {percent(gap):.1f} mAP points "
            f"{numbers}."
        )
    if gap <= -TIE_MAP:
        return (
            f"RVSL stage 3 does not beat {label} on {TARGET_SET}: it is {percent(-gap):.1f} mAP "
            f"points behind {numbers}."
        )
    return (
        f"RVSL stage 3 does not beat {label} on {TARGET_SET}: they are within "
        f"{percent(TIE_MAP):g} mAP point {numbers}."
    )


def gaps_compared_clause(
    rvsl: Mapping[str, Any], baseline: Mapping[str, Any], adabn: Mapping[str, Any]
) -> str | None:
    """Which gap is larger, over the baseline or over AdaBN, and why: AdaBN's own change."""
    ours, base, adapted = target_map(rvsl), target_map(baseline), target_map(adabn)
    if ours is None or base is None or adapted is None:
        return None
    over_base, over_adabn = map_difference(ours, base), map_difference(ours, adapted)
    adabn_gain = map_difference(adapted, base)
    if abs(adabn_gain) < NO_CHANGE_MAP:
        relation = "the same as"
    else:
        relation = "smaller than" if adabn_gain > 0 else "larger than"
    return (
        f"The gap over AdaBN ({percent(over_adabn):+.1f}) is {relation} the gap over the "
        f"baseline ({percent(over_base):+.1f}): re-estimating BatchNorm statistics on the real "
        f"hazy images alone changes the baseline by {percent(adabn_gain):+.1f} points."
    )


def ablations_clause(rvsl: Mapping[str, Any], ablations: list[Mapping[str, Any]]) -> str | None:
    """Each ablation's REAL_FOGGY mAP change from RVSL stage 3."""
    ours = target_map(rvsl)
    changes = [
        f"{row['model']} {percent(map_difference(target_map(row), ours)):+.1f}"
        for row in ablations
        if ours is not None and target_map(row) is not None
    ]
    if not changes:
        return None
    return (
        f"Ablations, change in {TARGET_SET} mAP from RVSL stage 3: {', '.join(changes)} "
        f"(under {percent(TIE_MAP):g} point counts as no effect)."
    )


def selection_clause(rows: list[Mapping[str, Any]]) -> str | None:
    """Rows whose checkpoint was picked by its best test-set mAP are optimistic: say which."""
    picked = [r["model"] for r in rows if r["selection"] == FALLBACK_SELECTION]
    if not picked:
        return None
    return (
        f"The checkpoints of {', '.join(picked)} are the epochs with the best test-set mAP, "
        "which flatters them."
    )


def reading(rows: list[dict[str, Any]], roles: Mapping[str, str | None]) -> str:
    """One paragraph from this run's numbers; every verdict follows the thresholds above."""
    by_name = {r["model"]: r for r in rows}
    role = {key: by_name.get(name) if name else None for key, name in roles.items()}
    rvsl, baseline, adabn = role["rvsl"], role["baseline"], role["adabn"]
    clauses = [haze_clause(role["clear_only"]) if role["clear_only"] else None]
    if rvsl is not None:
        clauses.append(gap_clause(rvsl, baseline, "the baseline") if baseline else None)
        clauses.append(gap_clause(rvsl, adabn, "AdaBN") if adabn else None)
        clauses.append(gaps_compared_clause(rvsl, baseline, adabn) if baseline and adabn else None)
        ablations = [r for r in rows if r["stage"] == "real_haze" and r is not rvsl]
        clauses.append(ablations_clause(rvsl, ablations))
    clauses.append(selection_clause(rows))
    said = [c for c in clauses if c]
    if rvsl is None or target_map(rvsl) is None:
        said.append(f"This run has no RVSL stage-3 result on {TARGET_SET} to compare.")
    elif baseline or adabn:
        said.append("One run: compare the gaps with their spread over seeds (make demo-seeds).")
    return " ".join(said)


# ------------------------------------------------------------------------------ Markdown
def _cell(value: float | None, shown: Callable[[float], float] = float, digits: int = 2) -> str:
    return "–" if value is None else f"{shown(value):.{digits}f}"


def _sets_of(rows: list[Mapping[str, Any]], branch: str) -> list[str]:
    found = {name for r in rows for name in r.get(branch, {})}
    return [s for s in MAIN_SETS if s in found] + sorted(found - set(MAIN_SETS))


def branch_table(rows: list[Mapping[str, Any]], branch: str, dehaze: bool = False) -> str:
    """mAP and rank-1 in percent per test set, one line per row; SSIM and PSNR when
    ``dehaze``."""
    sets = _sets_of(rows, branch)
    header = ["model", *(f"{s} {m}" for s in sets for m in ("mAP", "rank-1"))]
    header += ["SSIM", "PSNR (dB)"] if dehaze else []
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in rows:
        per_set = row.get(branch, {})
        cells = [row["model"]]
        for name in sets:
            cells += [_cell(per_set.get(name, {}).get(m), percent) for m in ("mAP", "rank1")]
        if dehaze:
            quality = row.get("dehaze", {})
            cells += [_cell(quality.get("ssim"), digits=4), _cell(quality.get("psnr"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(summary: Mapping[str, Any]) -> str:
    """summary.md: the tables, how each checkpoint was chosen, and the reading."""
    rows = summary["rows"]
    parts = ["## Re-identification, hazy branch (%)", "", branch_table(rows, "hazy", dehaze=True)]
    two_branch = [r for r in rows if "clear" in r]
    if two_branch:
        parts += [
            "",
            "## Clear branch of the RVSL models (%)",
            "",
            branch_table(two_branch, "clear"),
        ]
    parts += ["", "## Checkpoints", ""]
    parts += [f"- {r['model']}: {r['selection']}" for r in rows]
    parts += ["", "## Reading", "", summary["reading"]]
    return "\n".join(parts)


# ------------------------------------------------------------------------------ files
def map_chart(rows: list[Mapping[str, Any]]) -> np.ndarray:
    """Hazy-branch mAP in percent per test set (groups) and model (bars)."""
    sets = _sets_of(rows, "hazy")
    series = {
        r["model"]: [_percent_or_none(r["hazy"].get(s, {}).get("mAP")) for s in sets] for r in rows
    }
    return grouped_bar_chart(sets, series, "mAP (%), hazy branch", top=None)


def _percent_or_none(value: float | None) -> float | None:
    return None if value is None else percent(value)


def write_summary(summary: Mapping[str, Any], folder: Path) -> None:
    """summary.json, summary.md and (when any mAP was measured) summary.png in ``folder``."""
    folder = Path(folder)
    text = json.dumps(summary, indent=2)
    atomic_write(folder / "summary.json", lambda handle: handle.write(text.encode()))
    markdown = to_markdown(summary) + "\n"
    atomic_write(folder / "summary.md", lambda handle: handle.write(markdown.encode()))
    if any(r["hazy"] for r in summary["rows"]):
        save_png(map_chart(summary["rows"]), folder / "summary.png")


def rank_list_comparison(
    datamodule: Any,
    checkpoints: Mapping[str, str | Path],
    device: str | torch.device = "cpu",
    num_queries: int = 6,
) -> np.ndarray:
    """The same first ``num_queries`` REAL_FOGGY queries ranked by each checkpoint's hazy
    branch, side by side, each captioned with its label."""
    pictures = []
    for label, path in checkpoints.items():
        net = load_net(path, map_location=device)
        picture = rank_lists_of(
            net, datamodule, TARGET_SET, "hazy", num_queries=num_queries, device=device
        )
        pictures.append(captioned(picture, label))
    return side_by_side(pictures)
