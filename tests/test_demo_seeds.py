"""scripts/demo_seeds.py: the demo over seeds, aggregated, and its stage-3 ablations."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from rvsl.training import objectives
from rvsl.training.chain import parse_chain
from rvsl.training.stages import stage_weights

SCRIPTS = Path(__file__).parents[1] / "scripts"


@pytest.fixture(autouse=True)
def scripts_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # as when the script runs: its folder comes first


def summary(baseline: float, rvsl: float, adabn: float | None = None) -> dict:
    """A chain's summary.json with these REAL_FOGGY hazy mAPs in % (rank-1: mAP + 10), stored
    as summary.json stores them: fractions."""

    def row(model: str, stage: str, value: float) -> dict:
        fractions = {"mAP": value / 100, "rank1": (value + 10) / 100, "mINP": value / 200}
        hazy = {"REAL_FOGGY": fractions}
        return {"model": model, "stage": stage, "hazy": hazy}

    rows = [row("baseline", "baseline", baseline), row("real_haze", "real_haze", rvsl)]
    roles = {"baseline": "baseline", "rvsl": "real_haze", "adabn": None}
    if adabn is not None:
        rows.append(row("baseline_adabn", "adabn", adabn))
        roles["adabn"] = "baseline_adabn"
    return {"rows": rows, "roles": roles, "reading": "..."}


def write_runs(folder: Path, summaries: dict[int, dict]) -> None:
    for seed, content in summaries.items():
        (folder / f"seed_{seed}").mkdir(parents=True)
        (folder / f"seed_{seed}" / "summary.json").write_text(json.dumps(content))


def test_the_aggregate_is_the_mean_and_sample_std_per_model_and_metric(tmp_path):
    import demo_seeds

    write_runs(tmp_path, {1: summary(10, 13, 11), 2: summary(12, 12, 12), 3: summary(14, 20)})
    files = {seed: tmp_path / f"seed_{seed}" / "summary.json" for seed in (1, 2, 3)}
    summaries = {seed: json.loads(path.read_text()) for seed, path in files.items()}

    aggregated = demo_seeds.aggregate(summaries)

    # fractions, as in summary.json (seeds.md shows percent)
    baseline = aggregated["models"]["baseline"]["hazy/REAL_FOGGY/mAP"]
    assert (baseline["mean"], baseline["std"], baseline["n"]) == pytest.approx((0.12, 0.02, 3))
    rvsl = aggregated["models"]["real_haze"]["hazy/REAL_FOGGY/mAP"]
    assert rvsl["mean"] == pytest.approx(0.15)
    assert rvsl["std"] == pytest.approx(math.sqrt(19) / 100)  # (4+9+25)/2 in %^2
    assert aggregated["models"]["real_haze"]["hazy/REAL_FOGGY/rank1"]["mean"] == pytest.approx(0.25)
    adabn = aggregated["models"]["baseline_adabn"]["hazy/REAL_FOGGY/mAP"]
    assert (adabn["mean"], adabn["std"]) == pytest.approx((0.115, math.sqrt(0.5) / 100))
    assert adabn["n"] == 2
    gain = aggregated["gains"]["baseline"]
    assert gain["per_seed"] == {1: 0.03, 2: 0.0, 3: 0.06}
    assert (gain["mean"], gain["std"]) == pytest.approx((0.03, 0.03))
    assert gain["wins"] == 2  # a 0.0 gain is no win
    assert aggregated["gains"]["adabn"]["per_seed"] == {1: 0.02, 2: 0.0}


def test_seeds_md_starts_with_the_command_and_date_and_tabulates_mean_and_std(tmp_path):
    import demo_seeds

    aggregated = demo_seeds.aggregate({1: summary(10, 13), 2: summary(12, 12), 3: summary(14, 20)})
    demo_seeds.write_outputs(tmp_path, aggregated, "python scripts/demo_seeds.py", "2024-05-01", {})

    lines = (tmp_path / "seeds.md").read_text().splitlines()
    assert lines[0] == "Command: `python scripts/demo_seeds.py`" and lines[2] == "Date: 2024-05-01"
    text = "\n".join(lines)
    assert "| baseline | 3 | 12.00 ± 2.00 | 22.00 ± 2.00 |" in text
    assert "| 3 | +6.00 |" in text and "| mean ± std | 3.00 ± 3.00 |" in text
    assert "beats the baseline on REAL_FOGGY by at least 1 mAP point in 2 of 3 seeds" in text
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["command"] == "python scripts/demo_seeds.py" and saved["seeds"] == [1, 2, 3]


def test_the_ablations_copy_stage_3_from_stage_2_with_one_weight_zeroed(compose_train):
    import demo_seeds

    chain = demo_seeds.demo_chain(["experiment=demo"])
    ablations = demo_seeds.ablation_entries(chain)

    stage3 = next(e for e in chain if e["stage"] == "real_haze")
    assert [a["name"] for a in ablations] == [
        "real_haze_no_ea",
        "real_haze_no_p2p",
        "real_haze_no_prior",
    ]
    assert all(a["from"] == "real_clear" for a in ablations)
    assert all(a["max_epochs"] == stage3["max_epochs"] for a in ablations)
    assert [a["overrides"][-1] for a in ablations] == ["loss.ea=0", "loss.p2p=0", "loss.prior=0"]
    whole = [*chain, *ablations]
    parsed = OverridesParser.create().parse_overrides([f"chain={demo_seeds.hydra_literal(whole)}"])
    assert parsed[0].value() == whole  # the command line carries the chain unchanged
    assert [e.source for e in parse_chain(whole)][-3:] == ["real_clear"] * 3
    for ablation in ablations:  # each zeroed weight exists in stage 3's config
        key = ablation["overrides"][-1].split("=")[0]
        assert compose_train("stage=real_haze", f"{key}=0").loss[key.split(".")[1]] == 0


def test_a_zero_weight_removes_its_stage_3_terms_from_the_loss():
    torch.manual_seed(0)
    out = {
        "global_clear": torch.rand(2, 8),
        "global_hazy": torch.rand(2, 8),
        "gen_clear": torch.rand(2, 3, 16, 16),
        "cycle_hazy": torch.rand(2, 3, 16, 16),
    }
    hazy = torch.rand(2, 3, 16, 16)
    removed = {"ea": ["ea"], "p2p": ["p2p"], "prior": ["dcp", "tv", "cr"]}
    for weight, terms in removed.items():
        w = stage_weights("real_haze", {weight: 0.0})
        loss = objectives.real_hazy_cycle(
            out, hazy, w, lambda fake: fake.mean() * 0, "cycle_hazy", objectives.PriorOptions()
        )
        assert all(float(loss[t]) == 0.0 for t in terms)
        assert all(float(v) != 0.0 for k, v in loss.items() if k not in terms and k != "adv")


def test_main_runs_one_rvsl_train_per_seed_then_aggregates(tmp_path, monkeypatch):
    import demo_seeds

    commands = []

    def fake_run(command, check):
        commands.append(command)
        seed = int(command[command.index("-m") + 2].split("=")[1])
        folder = Path(command[command.index("-m") + 3].split("=", 1)[1].strip("'"))
        write_runs(folder.parent, {seed: summary(10 + seed, 12 + seed)})
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(demo_seeds.subprocess, "run", fake_run)
    code = demo_seeds.main(["--seeds", "1", "2", "--out", str(tmp_path), "trainer.max_epochs=1"])

    assert code == 0
    assert [c[3:] for c in commands] == [
        ["seed=1", f"hydra.run.dir='{tmp_path / 'seed_1'}'", "trainer.max_epochs=1"],
        ["seed=2", f"hydra.run.dir='{tmp_path / 'seed_2'}'", "trainer.max_epochs=1"],
    ]
    assert "| mean ± std | 2.00 ± 0.00 |" in (tmp_path / "seeds.md").read_text()
    assert demo_seeds.main(["--seeds", "1", "--out", str(tmp_path)]) == 0
    assert len(commands) == 2  # a seed with a summary.json is not run again


def test_a_chain_entry_with_from_starts_from_that_entrys_selected_checkpoint(
    compose_train, monkeypatch
):
    from rvsl.training import chain

    cfg = compose_train(
        "chain=[syn_haze,real_clear,real_haze,"
        "{stage:real_haze,name:real_haze_no_ea,from:real_clear,overrides:['loss.ea=0']}]"
    )
    root = Path(cfg.paths.output_dir)
    started = {}

    def fake_train(stage_cfg):
        name = Path(stage_cfg.paths.output_dir).name
        started[name] = (stage_cfg.init_from, stage_cfg.loss.ea)
        return {"selected_model_path": str(root / name / "last.ckpt"), "selection": "last epoch"}

    monkeypatch.setattr(chain, "train", fake_train)
    chain.run(cfg)

    stage2 = str(root / "real_clear" / "last.ckpt")
    assert started == {
        "syn_haze": (None, 0.5),
        "real_clear": (str(root / "syn_haze" / "last.ckpt"), 1.0),
        "real_haze": (stage2, 1.0),
        "real_haze_no_ea": (stage2, 0.0),
    }
    rows = json.loads((root / "summary.json").read_text())["rows"]
    assert rows[-1]["from"] == "real_clear" and rows[-1]["selection"] == "last epoch"


def test_a_chain_whose_from_names_no_earlier_entry_fails_before_training():
    from rvsl.utils.config import RunConfigError

    with pytest.raises(RunConfigError, match="from: real_clear must name an earlier"):
        parse_chain(["syn_haze", {"stage": "real_haze", "from": "real_clear"}, "real_clear"])
    with pytest.raises(RunConfigError, match="two entries are named 'real_haze'"):
        parse_chain(["real_haze", "real_haze"])
    with pytest.raises(RunConfigError, match="an adabn entry needs from"):
        parse_chain(["baseline", {"stage": "adabn", "name": "x"}])


def test_a_baseline_may_start_from_an_earlier_entry_like_any_stage():
    clear_only = {"stage": "baseline", "name": "clear_only"}
    chain = parse_chain([clear_only, {"stage": "baseline", "from": "clear_only"}])
    assert chain[1].source == "clear_only"
