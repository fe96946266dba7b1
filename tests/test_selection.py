"""Model selection never looks at a test set.

``selection=last`` reports and hands on the final epoch's weights; ``selection=val`` the epoch
with the best hazy mAP on VAL, training identities held out by ``data.val_identities``. The
evaluation after fitting reads the selected checkpoint, on the val sets and the final test sets.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from conftest_data import make_fvrid, write_split
from rvsl.cli.train import objective
from rvsl.training.train import train
from rvsl.utils.config import RunConfigError

VAL_MAP = "val/VAL/hazy/mAP"
EPOCHS = 2
QUICK = (
    "stage=baseline",
    f"trainer.max_epochs={EPOCHS}",
    "data.test_sets=[SYN]",
    "~callbacks.dehazing_panel",
)


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def val_map_per_epoch(run_dir: Path) -> dict[int, float]:
    """VAL hazy mAP of each training epoch (0-based), as logged by its validation; the
    evaluation after fitting logs one more row, at epoch ``EPOCHS``, left out here."""
    rows = [r for r in csv_rows(run_dir) if r.get(VAL_MAP) and int(r["epoch"]) < EPOCHS]
    return {int(r["epoch"]): float(r[VAL_MAP]) for r in rows}


@pytest.fixture
def root_with_heldout(tmp_path: Path) -> Path:
    """The tiny FVRID tree plus the optional held-out haze test set, REAL_HELDOUT."""
    root = make_fvrid(tmp_path / "FVRID_with_heldout")
    write_split(root / "FVRID_heldout" / "query_foggy", (50, 51, 52), 1, seed=11)
    write_split(root / "FVRID_heldout" / "gallery_foggy", (50, 51, 52), 2, seed=12)
    return root


# ------------------------------------------------------------------ refused before any work
def test_selection_val_without_a_validation_split_is_refused_before_any_work(compose_train):
    cfg = compose_train("selection=val")
    with pytest.raises(RunConfigError) as caught:
        train(cfg)
    message = str(caught.value)
    assert message.startswith("selection=val picks the epoch with the best val/VAL/hazy/mAP")
    assert "set data.val_identities=N" in message and "\n" not in message
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_an_unknown_selection_is_refused(compose_train):
    with pytest.raises(RunConfigError, match=r"selection=best: choose last .* or val"):
        train(compose_train("selection=best"))


def test_a_checkpoint_monitor_on_a_test_set_is_refused(compose_train):
    cfg = compose_train(
        "selection=val",
        "data.val_identities=2",
        "callbacks.model_checkpoint.monitor=val/REAL_FOGGY/hazy/mAP",
    )
    with pytest.raises(RunConfigError, match="never by a test set"):
        train(cfg)


def test_a_missing_final_test_set_is_refused_before_training(compose_train):
    cfg = compose_train("data.final_test_sets=[REAL_HELDOUT]")
    with pytest.raises(RunConfigError, match=r"data\.final_test_sets asks for REAL_HELDOUT, but"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


# ------------------------------------------------------------------ the search objective
def test_the_optuna_search_maximises_val_and_needs_a_validation_split(compose_train):
    cfg = compose_train("hparams_search=optuna", "data.val_identities=2")
    assert cfg.optimized_metric == cfg.callbacks.model_checkpoint.monitor == VAL_MAP
    with pytest.raises(RunConfigError, match=r"hparams_search=optuna .* data.val_identities=N"):
        train(compose_train("hparams_search=optuna"))
    with pytest.raises(RunConfigError, match="never a test set"):
        train(
            compose_train(
                "hparams_search=optuna",
                "data.val_identities=2",
                "optimized_metric=val/REAL_FOGGY/hazy/mAP",
            )
        )


def test_rvsl_train_returns_the_selected_val_score_and_never_a_test_metric():
    assert objective({"best_model_score": 0.25, "val/REAL_FOGGY/hazy/mAP": 0.9}) == 0.25
    assert objective({"val/REAL_FOGGY/hazy/mAP": 0.9, "val/SYN/hazy/mAP": 0.8}) == 0.0


# ------------------------------------------------------------------ what a fit selects
def test_selection_last_reports_and_evaluates_the_last_epochs_weights(compose_train):
    cfg = compose_train(*QUICK, "data.val_identities=2")  # selection=last: the default
    metrics = train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert metrics["selected_model_path"] == metrics["best_model_path"] == str(last)
    assert metrics["selection"] == f"last epoch (epoch {EPOCHS})"
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no best-epoch file
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["epoch"] == EPOCHS - 1  # the last epoch, counted from 0
    after_fit = metrics["best"]
    for name in ("VAL", "SYN"):  # the same weights as the last validation: the same numbers
        key = f"val/{name}/hazy/mAP"
        assert after_fit[key] == pytest.approx(metrics[key]), key
    assert metrics["best_model_score"] == pytest.approx(after_fit[VAL_MAP])
    assert list(val_map_per_epoch(Path(cfg.paths.output_dir))) == [0, 1]  # curves every epoch


def test_selection_val_picks_the_best_val_epoch_and_evaluates_it_with_the_final_sets(
    compose_train, root_with_heldout
):
    cfg = compose_train(
        *QUICK,
        f"data.root={root_with_heldout}",
        "selection=val",
        "data.val_identities=2",
        "data.final_test_sets=[REAL_HELDOUT]",
    )
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    per_epoch = val_map_per_epoch(run_dir)
    best_epoch = max(per_epoch, key=lambda e: (per_epoch[e], -e))  # ties: the earlier epoch
    selected = Path(metrics["selected_model_path"])
    assert selected == run_dir / "checkpoints" / f"best-epoch{best_epoch:03d}.ckpt"
    assert metrics["best_model_path"] == str(selected)
    assert metrics["selection"] == f"best VAL hazy mAP (epoch {best_epoch + 1} of {EPOCHS})"
    assert metrics["best_model_score"] == pytest.approx(per_epoch[best_epoch])
    after_fit = metrics["best"]
    assert after_fit[VAL_MAP] == pytest.approx(per_epoch[best_epoch])  # the selected weights
    assert 0.0 <= after_fit["val/REAL_HELDOUT/hazy/mAP"] <= 1.0  # evaluated after fitting ...
    during_training = [r for r in csv_rows(run_dir) if int(r["epoch"]) < EPOCHS]
    assert not any(v for r in during_training for k, v in r.items() if "REAL_HELDOUT" in k)
