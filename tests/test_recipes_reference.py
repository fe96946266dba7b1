"""The prior-loss switches of the stage recipes: which images each prior sees, and the
reference's TV border and airlight arithmetic threaded through from ``PriorOptions``."""

from __future__ import annotations

import pytest
import torch

from rvsl.losses import (
    colinear_relation_loss,
    dark_channel_loss,
    midc_loss,
    total_variation_loss,
)
from rvsl.training import objectives
from rvsl.training.stages import stage_weights

PRIOR = 0.01  # the stages' shared prior weight
REFERENCE_INPUTS = {"first_image_only": True, "remap_from_minus_one": True}


def zero_adversary(images: torch.Tensor) -> torch.Tensor:
    return images.sum() * 0


def stage3_batch(size=(48, 50)):
    """A real hazy batch z in [0, 1] and the outputs of its cycle, Gc in [-1, 1] like a tanh."""
    torch.manual_seed(0)
    z = torch.rand(3, 3, *size)
    out = {
        "global_clear": torch.randn(3, 4),
        "global_hazy": torch.randn(3, 4),
        "gen_clear": torch.rand(3, 3, *size) * 2 - 1,
        "cycle_hazy": torch.rand(3, 3, *size),
    }
    return out, z


def stage2_batch(size=(48, 50)):
    """A real clear batch x and the outputs of its cycle, Gf in [-1, 1] like a tanh."""
    torch.manual_seed(1)
    x = torch.rand(3, 3, *size)
    out = {
        "global_clear": torch.randn(3, 4),
        "global_hazy": torch.randn(3, 4),
        "gen_hazy": torch.rand(3, 3, *size) * 2 - 1,
        "cycle_clear": torch.rand(3, 3, *size),
    }
    return out, x


def stage3(opts: objectives.PriorOptions, out, z):
    w = stage_weights("real_haze")
    return objectives.real_hazy_cycle(out, z, w, zero_adversary, "cycle_hazy", opts)


def stage2(opts: objectives.PriorOptions, out, x):
    w = stage_weights("real_clear")
    return objectives.real_clear_cycle(out, x, w, zero_adversary, "cycle_clear", opts)


def test_the_defaults_are_the_sensible_behaviour():
    opts = objectives.PriorOptions()
    assert (opts.first_image_only, opts.remap_from_minus_one) == (False, False)
    assert (opts.tv_border, opts.airlight) == ("inner", "mean")


def test_by_default_stage3_priors_see_the_whole_batch_as_given():
    out, z = stage3_batch()
    terms = stage3(objectives.PriorOptions(), out, z)
    gc = out["gen_clear"]
    torch.testing.assert_close(terms["dcp"], PRIOR * 0.5 * dark_channel_loss(gc))
    torch.testing.assert_close(terms["tv"], PRIOR * 2.0 * total_variation_loss(gc))
    torch.testing.assert_close(terms["cr"], PRIOR * 0.05 * colinear_relation_loss(gc, z))


def test_reference_stage3_remaps_only_the_dcp_and_tv_image_and_keeps_the_first_image():
    out, z = stage3_batch()
    terms = stage3(objectives.PriorOptions(**REFERENCE_INPUTS), out, z)
    first = out["gen_clear"][:1]
    remapped = (first + 1) / 2
    torch.testing.assert_close(terms["dcp"], PRIOR * 0.5 * dark_channel_loss(remapped))
    torch.testing.assert_close(terms["tv"], PRIOR * 2.0 * total_variation_loss(remapped))
    torch.testing.assert_close(terms["cr"], PRIOR * 0.05 * colinear_relation_loss(first, z[:1]))
    whole = stage3(objectives.PriorOptions(), out, z)
    for name in ("ea", "p2p", "adv"):  # the non-prior terms keep the whole batch
        torch.testing.assert_close(terms[name], whole[name])


def test_the_remap_alone_keeps_the_whole_batch_and_leaves_cr_alone():
    out, z = stage3_batch()
    terms = stage3(objectives.PriorOptions(remap_from_minus_one=True), out, z)
    gc = out["gen_clear"]
    torch.testing.assert_close(terms["tv"], PRIOR * 2.0 * total_variation_loss((gc + 1) / 2))
    torch.testing.assert_close(terms["cr"], PRIOR * 0.05 * colinear_relation_loss(gc, z))


def test_stage2_priors_ignore_the_stage3_switches():
    out, x = stage2_batch()
    sensible = stage2(objectives.PriorOptions(), out, x)
    reference = stage2(objectives.PriorOptions(**REFERENCE_INPUTS), out, x)
    assert sensible.keys() == reference.keys()
    for name in sensible:
        assert torch.equal(sensible[name], reference[name]), name
    gf = out["gen_hazy"]  # whole batch, no remap
    torch.testing.assert_close(sensible["midc"], PRIOR * midc_loss(x, gf, patch_size=1))
    torch.testing.assert_close(sensible["cr"], PRIOR * colinear_relation_loss(x, gf))


def test_the_tv_border_switch_reaches_the_stage3_tv_term():
    out, z = stage3_batch()
    terms = stage3(objectives.PriorOptions(tv_border="zero_pad"), out, z)
    expected = total_variation_loss(out["gen_clear"], border="zero_pad")
    torch.testing.assert_close(terms["tv"], PRIOR * 2.0 * expected)
    assert not torch.allclose(expected, total_variation_loss(out["gen_clear"]))


@pytest.mark.parametrize("size", [(48, 50), (24, 20)])  # k = 2 and k = 1 (A = 0) brightest
def test_the_airlight_switch_reaches_the_cr_term_of_both_stages(size):
    opts = objectives.PriorOptions(airlight="reference")
    out, z = stage3_batch(size)
    expected = colinear_relation_loss(out["gen_clear"], z, airlight="reference")
    torch.testing.assert_close(stage3(opts, out, z)["cr"], PRIOR * 0.05 * expected)
    assert not torch.allclose(expected, colinear_relation_loss(out["gen_clear"], z))
    out, x = stage2_batch(size)
    expected = colinear_relation_loss(x, out["gen_hazy"], airlight="reference")
    torch.testing.assert_close(stage2(opts, out, x)["cr"], PRIOR * expected)


@pytest.mark.parametrize(
    ("name", "value"),
    [("tv_border", "zero-pad"), ("airlight", "max"), ("dark_channel_target", "half")],
)
def test_an_unknown_option_value_is_refused_by_name(name, value):
    with pytest.raises(ValueError, match=f"priors.{name}"):
        objectives.PriorOptions(**{name: value})
