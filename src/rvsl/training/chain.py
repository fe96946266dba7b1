"""Several stages in one command: ``chain: [baseline, syn_haze, real_clear, real_haze]``.

An entry is a stage name or a mapping:

* ``{stage, name, max_epochs, overrides, from}`` trains ``stage``; ``name`` is its sub-folder
  and row label (default: the stage), ``max_epochs`` and ``overrides`` (Hydra overrides) apply
  to this entry only, and ``from`` names an earlier entry whose selected checkpoint it starts
  from. Without ``from`` an RVSL stage starts from the previous RVSL entry's selected checkpoint
  (docs/method.md) and a baseline from its own initialisation; with it, any entry starts from
  that checkpoint (the demo starts the baseline and RVSL from the same clear-only model).
* ``{stage: adabn, name, from, overrides, batches}`` takes the checkpoint selected for the
  entry named by ``from``, re-estimates its BatchNorm statistics on the real hazy training
  images (:mod:`rvsl.training.adabn`; ``batches`` caps the batches, default one pass), and
  evaluates it like a trained stage: a comparison row, not a training stage.

Every entry is composed from the same configs and command-line overrides as a single-stage run,
with its own run sub-folder, and the chain ends with the comparison of
:mod:`rvsl.evaluation.summary` in the run folder (``summary.md``, ``summary.json``,
``summary.png``, ``rank_list_baseline_vs_rvsl.png``, ``val_curves.png``). ``ckpt_path=last`` with
``hydra.run.dir=`` the interrupted chain's folder resumes each stage from its own ``last.ckpt``;
stages that had not begun start afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rvsl.evaluation.curves import CURVES_PICTURE, val_curves_picture
from rvsl.evaluation.pictures import save_png
from rvsl.evaluation.summary import (
    TARGET_SET,
    ModelInfo,
    rank_list_comparison,
    selected_model,
    summarize,
    to_markdown,
    write_summary,
)
from rvsl.models.checkpoint import CheckpointError
from rvsl.training.adabn import run_adabn
from rvsl.training.train import LAST_CKPT, train
from rvsl.utils.config import RunConfigError

log = logging.getLogger(__name__)
ADABN = "adabn"
BASELINE = "baseline"
TRAINED_KEYS = frozenset({"stage", "name", "max_epochs", "overrides", "from"})
ADABN_KEYS = frozenset({"stage", "name", "from", "overrides", "batches"})
RANK_LIST_COMPARISON = "rank_list_baseline_vs_rvsl.png"
_OWN_KEYS = ("stage=", "chain=", "init_from=", "paths.output_dir=", "ckpt_path=")


@dataclass(frozen=True)
class ChainEntry:
    """One parsed chain entry: ``source`` is its ``from``, ``batches`` AdaBN's batch cap."""

    stage: str
    name: str
    overrides: tuple[str, ...] = ()
    source: str | None = None
    batches: int | None = None


def parse_entry(entry: Any) -> ChainEntry:
    """A chain entry: a stage name, or a mapping with the keys its kind allows (see the module
    docstring); ``max_epochs`` becomes a ``trainer.max_epochs`` override."""
    if isinstance(entry, str):
        return ChainEntry(entry, entry)
    if not isinstance(entry, Mapping) or "stage" not in entry:
        raise RunConfigError(
            f"chain entry {entry!r}: expected a stage name or a mapping with keys "
            f"{sorted(TRAINED_KEYS)} (or {sorted(ADABN_KEYS)} for stage: {ADABN})"
        )
    allowed = ADABN_KEYS if entry["stage"] == ADABN else TRAINED_KEYS
    if not set(entry) <= allowed:
        raise RunConfigError(
            f"chain entry {dict(entry)!r}: unknown keys {sorted(set(entry) - allowed)}; "
            f"a {entry['stage']} entry takes {sorted(allowed)}"
        )
    extra = [str(o) for o in entry.get("overrides") or []]
    if entry.get("max_epochs") is not None:
        extra.append(f"trainer.max_epochs={int(entry['max_epochs'])}")
    batches = entry.get("batches")
    return ChainEntry(
        stage=str(entry["stage"]),
        name=str(entry.get("name") or entry["stage"]),
        overrides=tuple(extra),
        source=str(entry["from"]) if entry.get("from") else None,
        batches=int(batches) if batches is not None else None,
    )


def parse_chain(entries: Sequence[Any]) -> list[ChainEntry]:
    """Every entry parsed and checked before any training: unique names, each ``from`` naming
    an earlier trained entry, AdaBN entries with a ``from``."""
    chain: list[ChainEntry] = []
    for entry in map(parse_entry, entries):
        earlier = {e.name: e for e in chain}
        if entry.name in earlier:
            raise RunConfigError(f"chain: two entries are named {entry.name!r}; give each a name")
        if entry.stage == ADABN and entry.source is None:
            raise RunConfigError(f"chain entry {entry.name!r}: an {ADABN} entry needs from: ENTRY")
        source = earlier.get(entry.source) if entry.source else None
        if entry.source and (source is None or source.stage == ADABN):
            raise RunConfigError(
                f"chain entry {entry.name!r}: from: {entry.source} must name an earlier trained "
                f"entry, one of {[e.name for e in chain if e.stage != ADABN]}"
            )
        chain.append(entry)
    return chain


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one stage, or every entry of ``cfg.chain`` in order, then write the comparison."""
    if not cfg.get("chain"):
        return train(cfg)
    chain = parse_chain(list(cfg.chain))
    root = Path(cfg.paths.output_dir)
    user_overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(_OWN_KEYS)]
    by_name = {entry.name: entry for entry in chain}
    results: dict[str, dict[str, Any]] = {}
    configs: dict[str, DictConfig] = {}
    previous_rvsl = cfg.get("init_from")  # what an RVSL entry without from: starts from
    previous_rvsl_name: str | None = None
    starts: dict[str, str | None] = {}  # trained entry -> the entry whose weights it continues
    for entry in chain:
        start = _starting_checkpoint(entry, results, previous_rvsl)
        if entry.source and start is None:
            log.warning("chain: %s skipped: %s selected no checkpoint", entry.name, entry.source)
            continue
        if entry.stage == ADABN:
            source = by_name[entry.source]
            configs[entry.name] = _compose(user_overrides, source, root / entry.name, entry)
            results[entry.name] = _adapt(configs[entry.name], entry, start, results[source.name])
            continue
        first = not any(by_name[name].stage != ADABN for name in results)
        resume = _resume_overrides(cfg.get("ckpt_path"), root / entry.name, first)
        configs[entry.name] = _compose(
            user_overrides, entry, root / entry.name, start=start, resume=resume
        )
        results[entry.name] = train(configs[entry.name])
        starts[entry.name] = entry.source or (
            None if entry.stage == BASELINE else previous_rvsl_name
        )
        if entry.stage != BASELINE:
            previous_rvsl = selected_model(results[entry.name])[0] or previous_rvsl
            previous_rvsl_name = entry.name
    models = {name: model_info(by_name[name], configs[name]) for name in results}
    summary = summarize(results, models)
    write_summary(summary, root)
    log.info("results of the chain:\n%s", to_markdown(summary))
    draw_rank_list_comparison(summary, configs, root)
    draw_val_curves(starts, configs, root)
    last = results.get(chain[-1].name, {})
    return {"best_model_score": last.get("best_model_score"), "stages": results}


def _starting_checkpoint(
    entry: ChainEntry, results: Mapping[str, Mapping[str, Any]], previous_rvsl: str | None
) -> str | None:
    """The checkpoint an entry starts from: ``from``'s selected one, else (RVSL stages) the
    previous RVSL entry's; a baseline without ``from`` starts from nothing."""
    if entry.source:
        return selected_model(results[entry.source])[0] if entry.source in results else None
    return None if entry.stage == BASELINE else previous_rvsl


def _adapt(
    cfg: DictConfig, entry: ChainEntry, start: str, source_metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """An AdaBN entry's metrics: ``start`` (its source's selected checkpoint) adapted."""
    _, selection = selected_model(source_metrics)
    return run_adabn(cfg, start, selection, entry.batches)


def _resume_overrides(ckpt_path: Any, folder: Path, first: bool) -> list[str]:
    """``ckpt_path`` for one trained entry: ``last`` resumes the first entry and every begun
    one (the others start afresh); a file or folder is passed on as given."""
    if ckpt_path == "last":
        return ["ckpt_path=last"] if first or (folder / LAST_CKPT).is_file() else []
    return [f"ckpt_path='{ckpt_path}'"] if ckpt_path else []


def _compose(
    user_overrides: Sequence[str],
    entry: ChainEntry,
    folder: Path,
    adapted: ChainEntry | None = None,
    start: str | None = None,
    resume: Sequence[str] = (),
) -> DictConfig:
    """The entry's configuration: the command line's overrides, its stage and folder, its own
    overrides (then an AdaBN entry's on top of its source's), where it starts and resumes."""
    overrides = [*user_overrides, f"stage={entry.stage}", f"paths.output_dir='{folder}'"]
    overrides += [*entry.overrides, *(adapted.overrides if adapted else ()), *resume]
    if start:
        overrides.append(f"init_from='{start}'")
    log.info("chain: %s (%s)", (adapted or entry).name, " ".join(overrides))
    return compose(config_name="train", overrides=overrides)


def model_info(entry: ChainEntry, cfg: DictConfig) -> ModelInfo:
    """What the summary needs of an entry: its kind, its source, and from its configuration
    whether it is a clear-only baseline and whether its two branches differ."""
    network_stage = str(cfg.get("stage"))
    domains = list(cfg.model.get("baseline_domains") or [])
    return ModelInfo(
        stage=entry.stage,
        source=entry.source,
        clear_only=entry.stage == BASELINE and domains == ["clear"],
        two_branches=network_stage != BASELINE,
    )


def draw_val_curves(
    starts: Mapping[str, str | None], configs: Mapping[str, DictConfig], root: Path
) -> Path | None:
    """``val_curves.png``: VAL mAP per labelled-data epoch of every trained entry (see
    :mod:`rvsl.evaluation.curves`); None when no entry validated on VAL."""
    folders = {name: Path(configs[name].paths.output_dir) for name in starts}
    epochs = {name: int(configs[name].trainer.max_epochs) for name in starts}
    picture = val_curves_picture(folders, starts, epochs)
    return None if picture is None else save_png(picture, root / CURVES_PICTURE)


def draw_rank_list_comparison(
    summary: Mapping[str, Any], configs: Mapping[str, DictConfig], root: Path
) -> Path | None:
    """``rank_list_baseline_vs_rvsl.png``: the same REAL_FOGGY queries ranked by the baseline
    and by RVSL stage 3, from their selected checkpoints; None when either is missing."""
    roles = summary["roles"]
    rows = {r["model"]: r for r in summary["rows"]}
    if not roles.get("baseline") or not roles.get("rvsl"):
        return None
    labelled = {
        f"baseline ({roles['baseline']})": rows[roles["baseline"]]["checkpoint"],
        f"RVSL stage 3 ({roles['rvsl']})": rows[roles["rvsl"]]["checkpoint"],
    }
    if not all(path and Path(path).is_file() for path in labelled.values()):
        log.warning("no %s: a checkpoint is missing (%s)", RANK_LIST_COMPARISON, labelled)
        return None
    cfg = configs[roles["rvsl"]]
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.add_final_test_sets()  # REAL_FOGGY may be evaluated after fitting only
    datamodule.setup("validate")
    if TARGET_SET not in datamodule.val_set_names:
        return None
    try:
        picture = rank_list_comparison(datamodule, labelled, _device(cfg))
    except CheckpointError as err:
        log.warning("no %s: %s", RANK_LIST_COMPARISON, err)
        return None
    return save_png(picture, root / RANK_LIST_COMPARISON)


def _device(cfg: DictConfig) -> torch.device:
    """The GPU when the trainer would use one, else the CPU."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if on_gpu else "cpu")
