"""The objective of each RVSL stage, as pure functions returning named, already-weighted terms.

A stage's objective (:func:`baseline`, :func:`syn_haze`, :func:`real_clear`, :func:`real_haze`)
runs the network on one training batch and returns a :class:`StageStep`: the main update's
terms ``{name: weighted_loss}`` (the training step sums and logs them), the network outputs, and
the (real, generated) images each discriminator of the stage compares next. The term functions
below them hold the maths; every weight comes from :mod:`rvsl.training.stages` or the config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from rvsl.losses import (
    LSGANLoss,
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
Batch = Mapping[str, Any]


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


# ------------------------------------------------------------------------------ stage objectives
@dataclass
class StageStep:
    """What a stage's objective hands the training step."""

    terms: Terms  # the main update's named, weighted terms
    outputs: dict[str, Any]  # network outputs per domain (``syn``, ``real``)
    discriminator_inputs: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    """discriminator name -> (real images, generated images), in the stage's optimizer order"""


@dataclass
class ObjectiveContext:
    """Everything an objective needs besides the batch; built once per module."""

    net: Any  # RVSLNet
    weights: Mapping[str, float]
    triplet: Callable[[Tensor, Tensor], Tensor]
    discriminators: Mapping[str, nn.Module]
    gan_loss: LSGANLoss
    label_smoothing: float = 0.0
    priors: PriorOptions = field(default_factory=PriorOptions)
    adversarial_pairing: str = "consistent"  # or "reference": the official D / G pairing
    baseline_domains: Sequence[str] = ("clear", "hazy")

    def adversary(self, name: str) -> Adversary:
        """The generator's LSGAN term against discriminator ``name``: scores of fakes -> 1."""
        disc = self.discriminators[name]
        return lambda fake: self.gan_loss(disc(fake), True)


class Objective(Protocol):
    def __call__(self, ctx: ObjectiveContext, batch: Batch) -> StageStep: ...


def _prefixed(prefix: str, terms: Terms) -> Terms:
    return {f"{prefix}/{k}": v for k, v in terms.items()}


def baseline(ctx: ObjectiveContext, batch: Batch) -> StageStep:
    """ReID only (CE + triplet) on the synthetic ``baseline_domains`` through one encoder."""
    syn = batch["syn"]
    domains = list(ctx.baseline_domains)
    images = torch.cat([syn[d] for d in domains])
    pids = syn["pid"].repeat(len(domains))
    global_feat, feat = ctx.net.reid(ctx.net.enc_hazy(images))
    logits = ctx.net.classifier(feat)
    terms = reid_only(logits, global_feat, pids, ctx.weights, ctx.triplet, ctx.label_smoothing)
    chunks = dict(zip(domains, logits.chunk(len(domains)), strict=True))
    first = next(iter(chunks.values()))
    out = {f"logits_{b}": chunks.get(b, first) for b in ("clear", "hazy")}
    return StageStep(_prefixed("syn", terms), {"syn": out})


def syn_haze(ctx: ObjectiveContext, batch: Batch) -> StageStep:
    """Stage 1: the labelled pair's terms with the generators' adversarial term; each
    discriminator then compares the real image of its domain with the translation into it."""
    syn = batch["syn"]
    out = ctx.net(syn["clear"], syn["hazy"])
    terms = synthetic_pair(
        out,
        syn["clear"],
        syn["hazy"],
        syn["pid"],
        ctx.weights,
        ctx.triplet,
        ctx.label_smoothing,
        ctx.adversary("disc_clear"),
        ctx.adversary("disc_hazy"),
    )
    fakes = {
        "disc_clear": (syn["clear"], out["gen_clear"]),
        "disc_hazy": (syn["hazy"], out["gen_hazy"]),
    }
    return StageStep(_prefixed("syn", terms), {"syn": out}, fakes)


def _auxiliary_pair(ctx: ObjectiveContext, batch: Batch) -> tuple[Terms, dict[str, Tensor]]:
    """Stages 2-3 keep the labelled pair as an auxiliary task (``aux_*`` weights, no GAN)."""
    syn = batch["syn"]
    out = ctx.net(syn["clear"], syn["hazy"])
    w, smoothing = ctx.weights, ctx.label_smoothing
    terms = synthetic_pair(
        out, syn["clear"], syn["hazy"], syn["pid"], w, ctx.triplet, smoothing, prefix="aux_"
    )
    return _prefixed("syn", terms), out


def _with_real_cycle(
    ctx: ObjectiveContext,
    batch: Batch,
    forward: Callable[[Tensor], dict[str, Tensor]],
    cycle_terms: Callable[..., Terms],
    discriminator: str,
    cycle_image: str,
    reference_image: str,
) -> StageStep:
    """Stages 2-3: the auxiliary pair plus the cycle of the unlabelled real batch; the stage's
    discriminator compares the real images with the cycle's reconstruction ``cycle_image``, and
    the generators' adversarial term scores that image (or ``reference_image`` under the
    official pairing)."""
    terms, syn_out = _auxiliary_pair(ctx, batch)
    real = batch["real"]["image"]
    out = forward(real)
    scored = reference_image if ctx.adversarial_pairing == "reference" else cycle_image
    adversary = ctx.adversary(discriminator)
    real_terms = cycle_terms(out, real, ctx.weights, adversary, scored, ctx.priors)
    fakes = {discriminator: (real, out[cycle_image])}
    return StageStep(terms | _prefixed("real", real_terms), {"syn": syn_out, "real": out}, fakes)


def real_clear(ctx: ObjectiveContext, batch: Batch) -> StageStep:
    """Stage 2, real clear x: ``Gf = Df(Ec(x))``, ``Gc' = Dc(Ef(Gf))`` (:func:`real_clear_cycle`);
    ``disc_clear`` compares x with Gc'."""
    forward = ctx.net.forward_real_clear
    return _with_real_cycle(
        ctx, batch, forward, real_clear_cycle, "disc_clear", "cycle_clear", "gen_hazy"
    )


def real_haze(ctx: ObjectiveContext, batch: Batch) -> StageStep:
    """Stage 3, real hazy z: ``Gc = Dc(Ef(z))``, ``Gf' = Df(Ec(Gc))`` (:func:`real_hazy_cycle`);
    ``disc_hazy`` compares z with Gf'."""
    forward = ctx.net.forward_real_hazy
    return _with_real_cycle(
        ctx, batch, forward, real_hazy_cycle, "disc_hazy", "cycle_hazy", "gen_clear"
    )
