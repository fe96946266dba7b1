"""The training stages in one table: what each trains on, what it steps, and its objective.

A :class:`Stage` names the unlabelled real images the stage adds (none, real clear or real
hazy), the discriminators it steps after the main update (in optimizer order), its headline
test set, the function that computes its objective (:mod:`rvsl.training.objectives`) and the
paper's loss weights. This table is the only place those weights are written: the Hydra group
``stage`` is generated from it (:func:`register_stage_configs`), so ``rvsl-train
stage=real_haze loss.ea=0.5`` overrides one weight, and ``rvsl-train --cfg job`` shows them all.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rvsl.training.objectives import Objective


@dataclass(frozen=True)
class Stage:
    """One training stage: its data, its updates, its objective and its default loss weights."""

    name: str
    summary: str  # one line, shown in the generated config
    number: int  # the datamodule's stage: 1 synthetic pairs only, 2 + real clear, 3 + real hazy
    discriminators: tuple[str, ...]  # stepped after the main update, in this order
    target_test_set: str  # the headline test set of the stage (reported, never used to select)
    objective_name: str  # its function in rvsl.training.objectives
    weights: Mapping[str, float] = field(default_factory=dict)
    shared_encoder: bool = False  # one encoder serves both branches (the baseline)
    generators: bool = True  # whether the main optimizer trains the generators

    @property
    def objective(self) -> Objective:
        """The stage's objective function (imported on first use: the table itself, which
        every Hydra config reads, stays free of torch)."""
        return getattr(importlib.import_module("rvsl.training.objectives"), self.objective_name)

    @property
    def real_domain(self) -> str | None:
        """The unlabelled real images the stage adds: None, ``clear`` or ``hazy``."""
        return {1: None, 2: "clear", 3: "hazy"}[self.number]


def _frozen(weights: dict[str, float]) -> Mapping[str, float]:
    return MappingProxyType(weights)


# Weights default to the paper's (docs/method.md). ``aux_*`` weigh the labelled synthetic branch
# that stages 2-3 keep as an auxiliary task; ``prior`` multiplies every prior term after it.
STAGES: Mapping[str, Stage] = MappingProxyType(
    {
        "baseline": Stage(
            name="baseline",
            summary="BoT-style comparison: CE + triplet on synthetic clear and hazy, one encoder",
            number=1,
            discriminators=(),
            target_test_set="SYN",
            objective_name="baseline",
            weights=_frozen({"reid": 1.0}),
            shared_encoder=True,
            generators=False,
        ),
        "syn_haze": Stage(
            name="syn_haze",
            summary="stage 1: labelled synthetic hazy pairs",
            number=1,
            discriminators=("disc_clear", "disc_hazy"),
            target_test_set="SYN",
            objective_name="syn_haze",
            weights=_frozen({"reid": 1.0, "p2p": 0.5, "ea": 0.5, "adv": 0.5}),
        ),
        "real_clear": Stage(
            name="real_clear",
            summary="stage 2: unlabelled real clear images, synthetic pairs as an auxiliary task",
            number=2,
            discriminators=("disc_clear",),
            target_test_set="REAL_CLEAR",
            objective_name="real_clear",
            weights=_frozen(
                {
                    "aux_reid": 10.0,
                    "aux_ea": 1.0,
                    "aux_p2p": 100.0,
                    "ea": 1.0,
                    "prior": 0.01,
                    "midc": 1.0,
                    "cr": 1.0,
                    "p2p": 100.0,
                    "adv": 0.5,
                }
            ),
        ),
        "real_haze": Stage(
            name="real_haze",
            summary="stage 3: unlabelled real hazy images, synthetic pairs as an auxiliary task",
            number=3,
            discriminators=("disc_hazy",),
            target_test_set="REAL_FOGGY",
            objective_name="real_haze",
            weights=_frozen(
                {
                    "aux_reid": 10.0,
                    "aux_ea": 1.0,
                    "aux_p2p": 100.0,
                    "ea": 1.0,
                    "prior": 0.01,
                    "dcp": 0.5,
                    "tv": 2.0,
                    "cr": 0.05,
                    "p2p": 100.0,
                    "adv": 0.5,
                }
            ),
        ),
    }
)


def get_stage(name: str) -> Stage:
    """The stage called ``name``; an unknown name is an error listing the known ones."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
    return STAGES[name]


def stage_weights(name: str, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The stage's weights with ``overrides`` applied; an unknown name is an error, not ignored."""
    weights = dict(get_stage(name).weights)
    unknown = sorted(set(overrides or {}) - set(weights))
    if unknown:
        raise ValueError(
            f"loss weights {unknown} do not exist in stage {name!r}; its weights are "
            f"{', '.join(weights)}"
        )
    weights.update({k: float(v) for k, v in (overrides or {}).items()})
    return weights


def register_stage_configs() -> None:
    """Make every stage a config of the Hydra group ``stage`` (``stage=real_haze``): it sets
    the global ``stage`` name, the ``loss`` weights and ``data.stage``. Idempotent."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for stage in STAGES.values():
        node = {"stage": stage.name, "loss": dict(stage.weights), "data": {"stage": stage.number}}
        store.store(group="stage", name=stage.name, node=node, package="_global_")
