"""The loss recipe of each RVSL stage, as dicts of named, already-weighted terms.

Every function returns ``{term_name: weighted_loss}``; the training step sums the values
and logs each one, so a reader finds a stage's whole objective in one place and a sweep
can change any weight from the config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from rvsl.losses import (
    colinear_relation_loss,
    dark_channel_loss,
    embedding_alignment,
    midc_loss,
    reconstruction,
    reid_loss,
    total_variation_loss,
)

Terms = dict[str, Tensor]
Adversary = Callable[[Tensor], Tensor]  # generated images -> generator's LSGAN loss

# Loss weights per stage, defaulting to the paper's (docs/method.md). ``aux_*`` weigh the labelled
# synthetic branch that stages 2-3 keep as an auxiliary task.
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "baseline": {"reid": 1.0},
    "syn_haze": {"reid": 1.0, "p2p": 0.5, "ea": 0.5, "adv": 0.5},
    "real_clear": {
        "aux_reid": 10.0,
        "aux_ea": 1.0,
        "aux_p2p": 100.0,
        "ea": 1.0,
        "prior": 0.01,
        "midc": 1.0,
        "cr": 1.0,
        "p2p": 100.0,
        "adv": 0.5,
    },
    "real_haze": {
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
    },
}
STAGES = tuple(DEFAULT_WEIGHTS)


def stage_weights(stage: str, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The stage's weights with ``overrides`` applied; an unknown name is an error, not ignored."""
    if stage not in DEFAULT_WEIGHTS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    weights = dict(DEFAULT_WEIGHTS[stage])
    unknown = sorted(set(overrides or {}) - set(weights))
    if unknown:
        raise ValueError(
            f"loss weights {unknown} do not exist in stage {stage!r}; its weights are "
            f"{', '.join(weights)}"
        )
    weights.update({k: float(v) for k, v in (overrides or {}).items()})
    return weights


@dataclass(frozen=True)
class PriorOptions:
    """Switches for the prior losses. The defaults are the sensible behaviour; each other
    value reproduces a quirk of the reference code (see docs/method.md).

    ``first_image_only`` and ``remap_from_minus_one`` act on stage 3 only, as in the reference:
    its stage 2 applies MIDC and CR to the whole batch as given. The remap touches the DCP and
    TV inputs only; CR still sees the (first) images un-remapped.
    """

    dark_channel_target: str = "zero"  # "one" = the reference's sign-flipped DCP loss
    first_image_only: bool = False  # stage 3: DCP, TV and CR on the batch's first image only
    remap_from_minus_one: bool = False  # stage 3: DCP and TV on (Gc + 1) / 2, CR unchanged
    dark_channel_patch: int = 35
    midc_patch: int = 1  # the reference's MIDC compares per-pixel RGB minima (no patch)
    tv_border: str = "inner"  # "zero_pad" = the reference's TV, zero-padded left/top border
    airlight: str = "mean"  # CR's airlight; "reference" = sum of the k-1 brightest / k

    def __post_init__(self) -> None:
        choices = {
            "dark_channel_target": ("zero", "one"),
            "tv_border": ("inner", "zero_pad"),
            "airlight": ("mean", "reference"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"priors.{name} must be one of {', '.join(allowed)}, "
                    f"got {getattr(self, name)!r}"
                )


def synthetic_pair(
    out: Mapping[str, Tensor],
    clear: Tensor,
    hazy: Tensor,
    pids: Tensor,
    w: Mapping[str, float],
    triplet: Callable[[Tensor, Tensor], Tensor],
    label_smoothing: float,
    adversary_clear: Adversary | None = None,
    adversary_hazy: Adversary | None = None,
    prefix: str = "",
) -> Terms:
    """Labelled synthetic pair (J clear, I hazy): ReID on both branches, P2P on both
    translations, EA between the branches, and (stage 1) the generators' adversarial term
    ``adv * (adv_c(Gc) + adv_f(Gf)) / 2``."""
    reid_c = reid_loss(out["logits_clear"], out["global_clear"], pids, triplet, label_smoothing)
    reid_h = reid_loss(out["logits_hazy"], out["global_hazy"], pids, triplet, label_smoothing)
    p = prefix
    terms = {
        "ce_clear": w[p + "reid"] * reid_c["ce"],
        "triplet_clear": w[p + "reid"] * reid_c["triplet"],
        "ce_hazy": w[p + "reid"] * reid_h["ce"],
        "triplet_hazy": w[p + "reid"] * reid_h["triplet"],
        "ea": w[p + "ea"] * embedding_alignment(out["global_clear"], out["global_hazy"]),
        "p2p_clear": w[p + "p2p"] * reconstruction(out["gen_clear"], clear),
        "p2p_hazy": w[p + "p2p"] * reconstruction(out["gen_hazy"], hazy),
    }
    if adversary_clear is not None and adversary_hazy is not None and w.get(p + "adv", 0.0):
        adv = adversary_clear(out["gen_clear"]) + adversary_hazy(out["gen_hazy"])
        terms["adv"] = w[p + "adv"] * adv / 2
    return terms


def reid_only(
    logits: Tensor,
    features: Tensor,
    pids: Tensor,
    w: Mapping[str, float],
    triplet: Callable[[Tensor, Tensor], Tensor],
    label_smoothing: float,
) -> Terms:
    """The baseline (BoT-style): CE + batch-hard triplet on clear and hazy images together."""
    reid = reid_loss(logits, features, pids, triplet, label_smoothing)
    return {"ce": w["reid"] * reid["ce"], "triplet": w["reid"] * reid["triplet"]}


def _prior_inputs(opts: PriorOptions, gen_clear: Tensor, hazy: Tensor) -> tuple[Tensor, ...]:
    """Stage 3's prior inputs ``(DCP/TV image, CR clear, CR hazy)`` after the reference switches:
    ``first_image_only`` keeps image 0 of both, ``remap_from_minus_one`` maps the DCP/TV image
    by ``(x + 1) / 2`` (the reference's CR gets the un-remapped images)."""
    if opts.first_image_only:
        gen_clear, hazy = gen_clear[:1], hazy[:1]
    smooth = (gen_clear + 1) / 2 if opts.remap_from_minus_one else gen_clear
    return smooth, gen_clear, hazy


def real_clear_cycle(
    out: Mapping[str, Tensor],
    clear: Tensor,
    w: Mapping[str, float],
    adversary: Adversary,
    adversarial_image: str,
    opts: PriorOptions,
) -> Terms:
    """Stage 2, unlabelled real clear x: ``Gf = Df(Ec(x))``, ``Gc' = Dc(Ef(Gf))``.

    ``ea * EA + prior * (midc * MIDC(x, Gf) + cr * CR(x, Gf)) + p2p * P2P(Gc', x) + adv * adv(.)``
    where the adversarial term scores ``adversarial_image`` (``cycle_clear`` by default,
    the image the stage-2 discriminator is trained on; ``gen_hazy`` in the reference code).
    MIDC and CR see the whole batch as given, whatever ``first_image_only`` and
    ``remap_from_minus_one`` say (those are stage-3 switches, as in the reference).
    """
    gen_hazy = out["gen_hazy"]
    cr = colinear_relation_loss(clear, gen_hazy, airlight=opts.airlight)
    return {
        "ea": w["ea"] * embedding_alignment(out["global_clear"], out["global_hazy"]),
        "midc": w["prior"] * w["midc"] * midc_loss(clear, gen_hazy, patch_size=opts.midc_patch),
        "cr": w["prior"] * w["cr"] * cr,
        "p2p": w["p2p"] * reconstruction(out["cycle_clear"], clear),
        "adv": w["adv"] * adversary(out[adversarial_image]),
    }


def real_hazy_cycle(
    out: Mapping[str, Tensor],
    hazy: Tensor,
    w: Mapping[str, float],
    adversary: Adversary,
    adversarial_image: str,
    opts: PriorOptions,
) -> Terms:
    """Stage 3, unlabelled real hazy z: ``Gc = Dc(Ef(z))``, ``Gf' = Df(Ec(Gc))``.

    ``ea * EA + prior * (dcp * DCP(Gc) + tv * TV(Gc) + cr * CR(Gc, z)) + p2p * P2P(Gf', z)
    + adv * adv(.)`` with the adversarial term on ``cycle_hazy`` by default (``gen_clear``
    in the reference code). With the reference switches DCP and TV see ``(Gc[:1] + 1) / 2``
    and CR sees ``(Gc[:1], z[:1])`` (see :class:`PriorOptions`).
    """
    smooth, gen_clear, z = _prior_inputs(opts, out["gen_clear"], hazy)
    dcp = dark_channel_loss(smooth, opts.dark_channel_target, opts.dark_channel_patch)
    tv = total_variation_loss(smooth, border=opts.tv_border)
    cr = colinear_relation_loss(gen_clear, z, airlight=opts.airlight)
    return {
        "ea": w["ea"] * embedding_alignment(out["global_clear"], out["global_hazy"]),
        "dcp": w["prior"] * w["dcp"] * dcp,
        "tv": w["prior"] * w["tv"] * tv,
        "cr": w["prior"] * w["cr"] * cr,
        "p2p": w["p2p"] * reconstruction(out["cycle_hazy"], hazy),
        "adv": w["adv"] * adversary(out[adversarial_image]),
    }


def total(terms: Mapping[str, Tensor]) -> Tensor:
    return torch.stack([t.float() for t in terms.values()]).sum()
