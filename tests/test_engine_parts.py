"""The training engine's small parts: image history pool, LR schedules, loss objectives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from official_schedule import official_lr
from rvsl.losses import TripletLoss
from rvsl.training import objectives
from rvsl.training.image_pool import ImagePool
from rvsl.training.schedules import linear_decay, warmup_multistep
from rvsl.training.stages import STAGES, stage_weights

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_the_pool_returns_new_images_unchanged_while_it_fills():
    pool = ImagePool(size=5)
    images = torch.rand(3, 3, 4, 4)
    torch.testing.assert_close(pool.query(images), images)
    assert pool.count == 3


def test_a_full_pool_swaps_about_half_of_the_images_for_stored_ones():
    torch.manual_seed(0)
    pool = ImagePool(size=50)
    pool.query(torch.zeros(50, 1, 2, 2))
    out = pool.query(torch.ones(400, 1, 2, 2))
    from_history = (out.flatten(1).sum(1) == 0).float().mean().item()
    assert 0.3 < from_history < 0.6  # stored zeros come back; later picks may return new ones
    assert pool.images.sum() > 0  # new images entered the history


def test_a_zero_size_pool_passes_images_through():
    images = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(ImagePool(size=0).query(images), images)


def test_the_pool_history_survives_a_state_dict_round_trip():
    pool = ImagePool(size=4)
    pool.query(torch.rand(3, 3, 2, 2))
    restored = ImagePool(size=4)
    restored.load_state_dict(pool.state_dict())
    assert restored.count == 3
    torch.testing.assert_close(restored.images[:3], pool.images[:3])


def _lrs(scheduler, optimizer, epochs):
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    return lrs


def test_the_main_schedule_warms_up_linearly_then_decays_by_gamma_at_milestones():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    lrs = _lrs(
        warmup_multistep(opt, warmup_epochs=4, warmup_factor=0.01, milestones=(6, 8), gamma=0.5),
        opt,
        10,
    )
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[2] == pytest.approx(0.01 + (1 - 0.01) * 2 / 4)
    assert lrs[4:6] == pytest.approx([1.0, 1.0])
    assert lrs[6:8] == pytest.approx([0.5, 0.5])
    assert lrs[8:10] == pytest.approx([0.25, 0.25])


def test_the_discriminator_schedule_is_constant_then_falls_linearly_to_zero():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=2.0)
    lrs = _lrs(linear_decay(opt, decay_start=3, max_epochs=7), opt, 8)
    assert lrs[:4] == pytest.approx([2.0, 2.0, 2.0, 2.0])
    assert lrs[4:] == pytest.approx([1.5, 1.0, 0.5, 0.0])


def test_schedules_resume_from_their_state_dict():
    def build():
        opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
        return opt, warmup_multistep(opt, warmup_epochs=3, milestones=(5,), gamma=0.1)

    opt, sched = build()
    _lrs(sched, opt, 4)
    state = sched.state_dict()
    opt2, sched2 = build()
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    assert _lrs(sched2, opt2, 3) == pytest.approx(_lrs(sched, opt, 3))


@pytest.mark.parametrize("stage", STAGES)
def test_the_stage_group_is_generated_from_the_stage_table(stage, compose_train):
    cfg = compose_train(f"stage={stage}")
    assert cfg.stage == stage
    assert dict(cfg.loss) == dict(STAGES[stage].weights)
    assert cfg.data.stage == STAGES[stage].number  # which real images the data adds
    assert not (CONF / "stage").exists()  # the table is the weights' only home


def test_the_paper_weights_of_stage_3_are_in_the_table():
    assert dict(STAGES["real_haze"].weights) == {
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
    assert STAGES["real_haze"].discriminators == ("disc_hazy",)
    assert STAGES["real_haze"].real_domain == "hazy"


def test_a_mistyped_loss_weight_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match=r"\['eaa'\] do not exist in stage 'real_haze'.*dcp"):
        stage_weights("real_haze", {"eaa": 1.0})


def test_the_stage1_recipe_weighs_each_term_as_the_paper_says():
    torch.manual_seed(0)
    b, d = 4, 8
    pids = torch.tensor([0, 0, 1, 1])
    clear, hazy = torch.rand(b, 3, 8, 8), torch.rand(b, 3, 8, 8)
    out = {
        "global_clear": torch.randn(b, d),
        "global_hazy": torch.randn(b, d),
        "logits_clear": torch.randn(b, 2),
        "logits_hazy": torch.randn(b, 2),
        "gen_clear": torch.rand(b, 3, 8, 8),
        "gen_hazy": torch.rand(b, 3, 8, 8),
    }
    w = stage_weights("syn_haze")
    triplet = TripletLoss(0.3)
    terms = objectives.synthetic_pair(
        out,
        clear,
        hazy,
        pids,
        w,
        triplet,
        0.0,
        lambda g: g.mean() * 0 + 2.0,
        lambda g: g.mean() * 0 + 4.0,
    )
    f = torch.nn.functional
    expected = (
        f.cross_entropy(out["logits_clear"], pids)
        + triplet(out["global_clear"], pids)
        + f.cross_entropy(out["logits_hazy"], pids)
        + triplet(out["global_hazy"], pids)
        + 0.5
        * (f.smooth_l1_loss(out["gen_clear"], clear) + f.smooth_l1_loss(out["gen_hazy"], hazy))
        + 0.5 * f.l1_loss(out["global_clear"], out["global_hazy"])
        + 0.5 * (2.0 + 4.0) / 2
    )
    torch.testing.assert_close(objectives.total(terms), expected)


def test_the_stage3_priors_can_follow_the_reference_quirks():
    torch.manual_seed(0)
    z = torch.rand(3, 3, 16, 16)
    out = {
        "global_clear": torch.randn(3, 4),
        "global_hazy": torch.randn(3, 4),
        "gen_clear": torch.rand(3, 3, 16, 16) * 2 - 1,
        "cycle_hazy": torch.rand(3, 3, 16, 16),
    }
    w = stage_weights("real_haze")
    zero = lambda g: g.sum() * 0  # noqa: E731
    sensible = objectives.real_hazy_cycle(out, z, w, zero, "cycle_hazy", objectives.PriorOptions())
    quirky = objectives.real_hazy_cycle(
        out,
        z,
        w,
        zero,
        "gen_clear",
        objectives.PriorOptions(
            dark_channel_target="one", first_image_only=True, remap_from_minus_one=True
        ),
    )
    from rvsl.losses import dark_channel_loss

    torch.testing.assert_close(sensible["dcp"], 0.01 * 0.5 * dark_channel_loss(out["gen_clear"]))
    remapped = (out["gen_clear"][:1] + 1) / 2
    torch.testing.assert_close(quirky["dcp"], 0.01 * 0.5 * dark_channel_loss(remapped, "one"))
    assert sensible["p2p"] == quirky["p2p"]


def test_warmup_200_with_offset_1_is_the_official_schedule_epoch_by_epoch():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-4)
    lrs = _lrs(warmup_multistep(opt, warmup_epochs=200, epoch_offset=1), opt, 200)
    expected = [official_lr(1e-4, e) for e in range(200)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(1e-4 * (0.01 * (1 - 1 / 200) + 1 / 200))
    assert max(lrs) < 1.1e-5  # the official LR never comes near its base of 1e-4


def test_the_default_warmup_reaches_the_base_learning_rate_in_ten_epochs():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-4)
    lrs = _lrs(warmup_multistep(opt), opt, 30)
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[10:20] == pytest.approx([1e-4] * 10)
    assert lrs[20] == pytest.approx(0.6e-4)


def test_a_negative_epoch_offset_is_refused():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="epoch_offset"):
        warmup_multistep(opt, epoch_offset=-1)
