"""The demo chain over several seeds, aggregated: is RVSL's gain larger than the seed noise?

    python scripts/demo_seeds.py [--seeds 1 2 3] [--ablations] [--out DIR] [OVERRIDE ...]

Runs ``rvsl-train seed=S hydra.run.dir=DIR/seed_S OVERRIDE ...`` for each seed, one after the
other (a seed whose folder already holds a ``summary.json`` is not run again). ``--ablations``
adds three entries to each seed's chain, each a copy of the stage-3 entry that starts from the
same seed's stage-2 checkpoint with one loss term off: ``loss.ea=0`` (no embedding alignment on
the real batch), ``loss.p2p=0`` (no cycle reconstruction), ``loss.prior=0`` (no priors). Then
every run's ``summary.json`` is aggregated into ``DIR/seeds.md`` and ``DIR/seeds.json``: mean
and sample standard deviation per model and metric, and per seed the REAL_FOGGY mAP gain of RVSL
stage 3 over the baseline (and over AdaBN when the chain has it). As in ``summary.json``, the
numbers of ``seeds.json`` are fractions in [0, 1] (gains: differences of them); ``seeds.md``
shows percent and mAP points.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rvsl.evaluation.evaluate import percent
from rvsl.evaluation.summary import MAIN_SETS, RVSL_STAGES, TARGET_SET, TIE_MAP, map_difference
from rvsl.models.rvsl_net import BRANCHES
from rvsl.utils.files import atomic_write

ABLATIONS = {"no_ea": "loss.ea=0", "no_p2p": "loss.p2p=0", "no_prior": "loss.prior=0"}
GAINS_OVER = ("baseline", "adabn")  # the roles stage 3 is compared with, per seed
LABELS = {"baseline": "the baseline", "adabn": "AdaBN"}


# ------------------------------------------------------------------------------ the chain
def demo_chain(overrides: Sequence[str]) -> list[Any]:
    """The chain ``rvsl-train OVERRIDE ...`` would run, as plain lists and dicts."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="rvsl.conf", version_base="1.3"):
        kept = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
        cfg = compose(config_name="train", overrides=kept)
    return list(OmegaConf.to_container(cfg.chain) or [])


def _entry_name(entry: Any) -> str:
    return entry if isinstance(entry, str) else str(entry.get("name") or entry["stage"])


def _entry_stage(entry: Any) -> str:
    return entry if isinstance(entry, str) else str(entry["stage"])


def ablation_entries(chain: Sequence[Any]) -> list[dict[str, Any]]:
    """One copy of the chain's stage-3 entry per ablation, named ``<stage 3>_<ablation>``,
    starting (``from``) at the RVSL entry stage 3 starts from, with one loss weight zeroed."""
    index = next(
        i
        for i, e in enumerate(chain)
        if _entry_stage(e) == "real_haze" and (isinstance(e, str) or not e.get("from"))
    )
    main = chain[index]
    main = {"stage": main} if isinstance(main, str) else dict(main)
    source = main.get("from") or next(
        _entry_name(e) for e in reversed(chain[:index]) if _entry_stage(e) in RVSL_STAGES
    )
    name = main.get("name") or main["stage"]
    return [
        main
        | {
            "name": f"{name}_{suffix}",
            "from": source,
            "overrides": [*main.get("overrides", []), override],
        }
        for suffix, override in ABLATIONS.items()
    ]


def hydra_literal(value: Any) -> str:
    """``value`` in Hydra's override grammar: lists, dicts, quoted strings, numbers, null."""
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_literal(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def seed_command(
    seed: int, folder: Path, overrides: Sequence[str], chain: Sequence[Any] | None = None
) -> list[str]:
    """``rvsl-train`` (this interpreter's) for one seed into ``folder``."""
    run_dir = f"hydra.run.dir={hydra_literal(str(folder))}"
    command = [sys.executable, "-m", "rvsl.cli.train", f"seed={seed}", run_dir]
    command += list(overrides)
    if chain is not None:
        command.append(f"chain={hydra_literal(list(chain))}")
    return command


# ------------------------------------------------------------------------------ aggregation
def flat_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A summary row's numbers as ``branch/SET/metric`` and ``dehaze/ssim|psnr``."""
    flat = {}
    for branch in BRANCHES:
        for name, values in row.get(branch, {}).items():
            flat |= {f"{branch}/{name}/{metric}": float(v) for metric, v in values.items()}
    flat |= {f"dehaze/{k}": float(v) for k, v in row.get("dehaze", {}).items()}
    return flat


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value) and count."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": list(values)}


def target_map(summary: Mapping[str, Any], role: str) -> float | None:
    """The REAL_FOGGY hazy mAP of the model a summary gave ``role`` to."""
    name = summary.get("roles", {}).get(role)
    row = next((r for r in summary["rows"] if r["model"] == name), None)
    if row is None:
        return None
    return row["hazy"].get(TARGET_SET, {}).get("mAP")


def stage3_gains(summaries: Mapping[int, Mapping[str, Any]], role: str) -> dict[str, Any] | None:
    """Per seed, RVSL stage 3's REAL_FOGGY mAP minus that of the model in ``role``."""
    per_seed = {}
    for seed, summary in summaries.items():
        ours, theirs = target_map(summary, "rvsl"), target_map(summary, role)
        if ours is not None and theirs is not None:
            per_seed[seed] = map_difference(ours, theirs)
    if not per_seed:
        return None
    wins = sum(gain >= TIE_MAP for gain in per_seed.values())
    return {"per_seed": per_seed, "wins": wins} | mean_std(list(per_seed.values()))


def aggregate(summaries: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± sample std per model (in order of first appearance) and metric over the seeds'
    summaries, and stage 3's per-seed gains over the baseline and AdaBN."""
    values: dict[str, dict[str, list[float]]] = {}
    for summary in summaries.values():
        for row in summary["rows"]:
            per_metric = values.setdefault(row["model"], {})
            for key, value in flat_metrics(row).items():
                per_metric.setdefault(key, []).append(value)
    models = {
        name: {key: mean_std(v) for key, v in metrics.items()} for name, metrics in values.items()
    }
    gains = {role: stage3_gains(summaries, role) for role in GAINS_OVER}
    return {
        "seeds": list(summaries),
        "models": models,
        "gains": {k: v for k, v in gains.items() if v},
    }


# ------------------------------------------------------------------------------ writing
def _pm(stats: Mapping[str, Any] | None) -> str:
    """Mean ± std of fractions, in percent (or mAP points for gains)."""
    if stats is None:
        return "–"
    std = "–" if stats["std"] is None else f"{percent(stats['std']):.2f}"
    return f"{percent(stats['mean']):.2f} ± {std}"


def _sets(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    found = {key.split("/")[1] for m in models.values() for key in m if key.startswith("hazy/")}
    return [s for s in MAIN_SETS if s in found] + sorted(found - set(MAIN_SETS))


def models_table(models: Mapping[str, Mapping[str, Any]]) -> str:
    """Hazy-branch mAP and rank-1 per test set, mean ± std over the seeds."""
    sets = _sets(models)
    header = ["model", "seeds", *(f"{s} {m}" for s in sets for m in ("mAP", "rank-1"))]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for name, metrics in models.items():
        count = max((s["n"] for s in metrics.values()), default=0)
        cells = [name, str(count)]
        cells += [_pm(metrics.get(f"hazy/{s}/{m}")) for s in sets for m in ("mAP", "rank1")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gains_table(gains: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> str:
    """Stage 3's REAL_FOGGY mAP gain per seed over each compared model, then mean ± std."""
    roles = list(gains)
    rows = [["seed", *(f"RVSL stage 3 − {LABELS[r]}" for r in roles)]]
    for seed in seeds:
        gain = [gains[r]["per_seed"].get(seed) for r in roles]
        rows.append([str(seed), *("–" if g is None else f"{percent(g):+.2f}" for g in gain)])
    rows.append(["mean ± std", *(_pm(gains[r]) for r in roles)])
    lines = ["| " + " | ".join(cells) + " |" for cells in rows]
    lines.insert(1, "|---" + "|---:" * len(roles) + "|")
    return "\n".join(lines)


def gains_sentence(gains: Mapping[str, Mapping[str, Any]]) -> str:
    """How often stage 3 wins, from the numbers (a win: a gain of at least TIE_MAP)."""
    parts = [
        f"RVSL stage 3 beats {LABELS[role]} on {TARGET_SET} by at least {percent(TIE_MAP):g} mAP "
        f"point in {g['wins']} of {g['n']} seeds (gain {_pm(g)} points)."
        for role, g in gains.items()
    ]
    return " ".join(parts) or f"No seed has both RVSL stage 3 and a baseline on {TARGET_SET}."


def to_markdown(
    aggregated: Mapping[str, Any], command: str, date: str, failed: Mapping[int, int]
) -> str:
    """seeds.md: the command and date, the models table, the gains, failed seeds."""
    parts = [
        f"Command: `{command}`",
        "",
        f"Date: {date}",
        "",
        f"Seeds: {', '.join(map(str, aggregated['seeds'])) or 'none finished'}",
        "",
        "## Hazy branch, mean ± sample std over seeds (%)",
        "",
        models_table(aggregated["models"]),
    ]
    if aggregated["gains"]:
        parts += ["", f"## RVSL stage 3 gain on {TARGET_SET} (mAP points)", ""]
        parts += [gains_table(aggregated["gains"], aggregated["seeds"]), ""]
    parts += [gains_sentence(aggregated["gains"])]
    if failed:
        parts += ["", "Failed: " + ", ".join(f"seed {s} (exit {rc})" for s, rc in failed.items())]
    return "\n".join(parts) + "\n"


def write_outputs(
    out: Path,
    aggregated: Mapping[str, Any],
    command: str,
    date: str,
    failed: Mapping[int, int],
) -> None:
    """seeds.json and seeds.md in ``out``, each written atomically."""
    record = {"command": command, "date": date, "failed": dict(failed)} | dict(aggregated)
    texts = {
        "seeds.json": json.dumps(record, indent=2) + "\n",
        "seeds.md": to_markdown(aggregated, command, date, failed),
    }
    for name, text in texts.items():
        atomic_write(out / name, lambda handle, text=text: handle.write(text.encode()))


# ------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--ablations", action="store_true", help="add the stage-3 ablations")
    parser.add_argument("--out", type=Path, help="default: outputs/demo_seeds/<date and time>")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        parser.error(f"not Hydra overrides (KEY=VALUE): {' '.join(bad)}")
    return args, overrides


def default_out(now: datetime) -> Path:
    log_dir = Path(os.environ.get("RVSL_LOG_DIR", "outputs"))
    return log_dir / "demo_seeds" / now.strftime("%Y-%m-%d_%H-%M-%S")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse_args(argv)
    now = datetime.now()
    out = args.out or default_out(now)
    chain = None
    if args.ablations:
        chain = demo_chain(overrides)
        chain = [*chain, *ablation_entries(chain)]
    summaries, failed = {}, {}
    for seed in args.seeds:
        folder = out / f"seed_{seed}"
        if not (folder / "summary.json").is_file():
            command = seed_command(seed, folder, overrides, chain)
            print("demo_seeds:", shlex.join(command), flush=True)
            returncode = subprocess.run(command, check=False).returncode
            if returncode:
                failed[seed] = returncode
                continue
        summaries[seed] = json.loads((folder / "summary.json").read_text())
    command = shlex.join(["python", "scripts/demo_seeds.py", *argv])
    write_outputs(out, aggregate(summaries), command, now.isoformat(timespec="seconds"), failed)
    print(f"demo_seeds: {out / 'seeds.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
