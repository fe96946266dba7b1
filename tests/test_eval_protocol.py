"""Evaluation-protocol switches: SYN's clear-branch input and the restoration arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rvsl.data.datamodule import RVSLDataModule
from rvsl.evaluation.evaluate import EvalOptions
from rvsl.evaluation.features import EvaluationError, extract_features
from rvsl.evaluation.run import run
from rvsl.metrics import RetrievalMetric
from rvsl.metrics.restoration import dehazing_quality
from rvsl.models.checkpoint import save_net
from rvsl.models.rvsl_net import RVSLNet
from rvsl.training.module import RVSLModule
from rvsl.utils.config import RunConfigError


@pytest.fixture(scope="module")
def tiny_net() -> RVSLNet:
    torch.manual_seed(0)
    net = RVSLNet("resnet18_ibn_a", num_classes=6, generator_width=8)
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for _ in range(3):
            net(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    return net.eval()


def _datamodule(root, **kwargs) -> RVSLDataModule:
    dm = RVSLDataModule(
        root, image_size=(32, 32), num_instances=2, batch_size=4, num_workers=0,
        eval_batch_size=5, test_sets=["SYN"], **kwargs,
    )  # fmt: skip
    dm.setup("test")
    return dm


@torch.no_grad()
def _expected_syn_features(net: RVSLNet, dm: RVSLDataModule) -> dict[str, torch.Tensor]:
    """Each SYN test pair's clear twin through Ec and hazy image through Ef, in test order."""
    pairs = list(dm.syn_test_pairs_dataloader())
    clear = torch.cat([b["clear"] for b in pairs])
    hazy = torch.cat([b["hazy"] for b in pairs])
    return {
        "clear_twin": net.embed(clear, branch="clear")["feat_clear"],
        "hazy": net.embed(hazy, branch="hazy")["feat_hazy"],
        "hazy_through_clear": net.embed(hazy, branch="clear")["feat_clear"],
    }


# ---------------------------------------------------------------- SYN clear-branch input
def test_syn_clear_input_clear_embeds_the_twin_through_ec_and_the_hazy_image_through_ef(
    tiny_net, tiny_fvrid
):
    dm = _datamodule(tiny_fvrid, syn_clear_input="clear")
    split = extract_features(tiny_net, dm.test_dataloader()[0])
    expected = _expected_syn_features(tiny_net, dm)
    torch.testing.assert_close(split.features["clear"], expected["clear_twin"])
    torch.testing.assert_close(split.features["hazy"], expected["hazy"])


def test_by_default_both_syn_branches_embed_the_hazy_image(tiny_net, tiny_fvrid):
    dm = _datamodule(tiny_fvrid)
    split = extract_features(tiny_net, dm.test_dataloader()[0])
    expected = _expected_syn_features(tiny_net, dm)
    torch.testing.assert_close(split.features["clear"], expected["hazy_through_clear"])
    torch.testing.assert_close(split.features["hazy"], expected["hazy"])
    assert not torch.allclose(split.features["clear"], expected["clear_twin"])


def test_twin_items_describe_the_same_hazy_images_as_the_default_items(tiny_fvrid):
    default = _datamodule(tiny_fvrid).val_sets[0]
    twins = _datamodule(tiny_fvrid, syn_clear_input="clear").val_sets[0]
    assert len(twins) == len(default) and twins.num_query == default.num_query
    for i in range(len(default)):
        a, b = default[i], twins[i]
        assert {k: a[k] for k in a if k != "image"} == {k: b[k] for k in a if k != "image"}
        torch.testing.assert_close(a["image"], b["image"])
        assert twins.twins[i].name == twins.records[i].path.name
        assert twins.twins[i].parent.name in ("query_clear", "gallery_clear")


def test_validation_step_feeds_the_twin_to_the_clear_branch_only_when_the_batch_has_one(
    tiny_net, tiny_fvrid
):
    module = RVSLModule(tiny_net).eval()
    module.val_set_names = ["SYN"]
    for choice in ("clear", "hazy"):
        module.val_metrics = nn.ModuleDict(
            {f"SYN_{b}": RetrievalMetric() for b in ("clear", "hazy")}
        )
        batch = next(iter(_datamodule(tiny_fvrid, syn_clear_input=choice).val_dataloader()[0]))
        with torch.no_grad():
            module.validation_step(batch, 0, 0)
            clear_input = batch["clear"] if choice == "clear" else batch["image"]
            want_clear = tiny_net.embed(clear_input, branch="clear")["feat_clear"]
            want_hazy = tiny_net.embed(batch["image"], branch="hazy")["feat_hazy"]
        torch.testing.assert_close(module.val_metrics["SYN_clear"].features[0], want_clear)
        torch.testing.assert_close(module.val_metrics["SYN_hazy"].features[0], want_hazy)


def test_rvsl_eval_honours_the_data_switch_and_the_restoration_setting(
    compose_eval, tiny_net, tiny_fvrid, tmp_path
):
    checkpoint = tmp_path / "tiny.ckpt"
    save_net(tiny_net, checkpoint)
    exported = tmp_path / "features.npz"
    results = run(
        compose_eval(
            f"checkpoint={checkpoint}", "test_set=SYN", "pictures=false",
            "data.syn_clear_input=clear", "eval.restoration_metrics=reference",
            f"export_features={exported}",
        )
    ).results  # fmt: skip
    assert results["syn_clear_input"] == "clear"
    assert results["options"]["restoration_metrics"] == "reference"
    expected = _expected_syn_features(tiny_net, _datamodule(tiny_fvrid))
    with np.load(exported) as arrays:
        np.testing.assert_allclose(
            arrays["SYN_clear_features"], expected["clear_twin"].numpy(), rtol=1e-4, atol=1e-5
        )


def test_the_defaults_keep_todays_protocol(compose_eval, compose_train):
    eval_cfg = compose_eval("checkpoint=x.ckpt")
    assert eval_cfg.data.syn_clear_input == "hazy"
    assert eval_cfg.eval.restoration_metrics == "standard"
    assert compose_train().restoration_metrics == "standard"


# ---------------------------------------------------------------- restoration arithmetic
class IdentityDehazer(nn.Module):
    """A stand-in network whose "dehazer" returns its input unchanged."""

    def dehaze(self, hazy: torch.Tensor) -> torch.Tensor:
        return hazy


def _window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.tensor([math.exp(-((x - size // 2) ** 2) / (2 * sigma**2)) for x in range(size)])
    g = g / g.sum()
    return torch.outer(g, g)


def _ssim_restated(x: torch.Tensor, y: torch.Tensor) -> float:
    """Local gaussian statistics from explicit zero-padded 11x11 patches (unfold)."""
    n, c, h, w = x.shape
    weights = _window().reshape(1, 1, -1, 1)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(F.pad(t, (5, 5, 5, 5)), 11).reshape(n, c, 121, h * w)
        return (patches * weights).sum(2)

    mx, my = local_mean(x), local_mean(y)
    vx, vy = local_mean(x * x) - mx**2, local_mean(y * y) - my**2
    cxy = local_mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def _psnr_restated(x: torch.Tensor, y: torch.Tensor) -> float:
    return 10 * math.log10(1 / float(((x - y) ** 2).mean()))


def _pairs(*dehazed_and_clear: tuple[torch.Tensor, torch.Tensor]) -> list[dict]:
    return [{"hazy": d, "clear": c} for d, c in dehazed_and_clear]


def test_reference_ssim_of_identical_images_is_one():
    images = torch.rand(2, 3, 24, 20)
    quality = dehazing_quality(IdentityDehazer(), _pairs((images, images)), restoration="reference")
    assert quality["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_reference_metrics_equal_a_restatement_averaged_over_batches():
    torch.manual_seed(1)
    batches = [
        (torch.rand(3, 3, 24, 20) * 1.2 - 0.1, torch.rand(3, 3, 24, 20)),
        (torch.rand(2, 3, 24, 20), torch.rand(2, 3, 24, 20)),
    ]
    quality = dehazing_quality(IdentityDehazer(), _pairs(*batches), restoration="reference")
    assert quality["ssim"] == pytest.approx(
        np.mean([_ssim_restated(d, c) for d, c in batches]), abs=1e-5
    )
    assert quality["psnr"] == pytest.approx(
        np.mean([_psnr_restated(d, c) for d, c in batches]), abs=1e-4
    )


def test_reference_psnr_averages_per_batch_values_unlike_the_whole_set_psnr():
    clear = torch.full((2, 3, 16, 16), 0.5)
    pairs = _pairs((clear + 0.1, clear), (clear + 0.01, clear))  # 20 dB and 40 dB
    reference = dehazing_quality(IdentityDehazer(), pairs, restoration="reference")
    standard = dehazing_quality(IdentityDehazer(), pairs)
    assert reference["psnr"] == pytest.approx(30.0, abs=1e-3)
    assert standard["psnr"] == pytest.approx(10 * math.log10(1 / 0.00505), abs=1e-3)


def test_reference_metrics_see_the_unclamped_output_and_standard_ones_the_clamped_one():
    clear = torch.full((2, 3, 16, 16), 0.8)
    above = [dehazing_quality(IdentityDehazer(), _pairs((clear + d, clear))) for d in (0.4, 0.7)]
    ref = [
        dehazing_quality(IdentityDehazer(), _pairs((clear + d, clear)), restoration="reference")
        for d in (0.4, 0.7)
    ]
    assert above[0] == pytest.approx(above[1])  # both clamp to 1.0
    assert ref[0]["psnr"] == pytest.approx(_psnr_restated(clear + 0.4, clear), abs=1e-4)
    assert ref[1]["psnr"] == pytest.approx(_psnr_restated(clear + 0.7, clear), abs=1e-4)


# ---------------------------------------------------------------- invalid values
def test_an_invalid_syn_clear_input_is_refused_naming_the_setting(
    tiny_fvrid, compose_eval, tmp_path
):
    with pytest.raises(ValueError, match=r"^data\.syn_clear_input must be one of"):
        RVSLDataModule(tiny_fvrid, syn_clear_input="foggy")
    checkpoint = tmp_path / "unread.ckpt"  # refused before it is read
    checkpoint.write_bytes(b"")
    with pytest.raises(RunConfigError, match=r"data\.syn_clear_input must be one of"):
        run(compose_eval(f"checkpoint={checkpoint}", "data.syn_clear_input=foggy"))


def test_an_invalid_restoration_setting_is_refused_naming_the_setting():
    with pytest.raises(EvaluationError, match=r"^eval\.restoration_metrics must be one of"):
        EvalOptions(restoration_metrics="exact")
    with pytest.raises(ValueError, match=r"^restoration_metrics must be one of"):
        dehazing_quality(IdentityDehazer(), [], restoration="exact")
