"""Every backbone builds and returns the documented shapes, at any input size."""

from __future__ import annotations

import pytest
import torch

from rvsl.models import BACKBONES, PatchDiscriminator, RVSLNet

SIZES = [(64, 64), (64, 32)]  # one square, one non-square (the 256x128 aspect ratio)


@pytest.fixture(scope="module", params=list(BACKBONES))
def net(request):
    torch.manual_seed(0)
    return RVSLNet(request.param, num_classes=5).eval()


@pytest.mark.parametrize("size", SIZES)
def test_every_backbone_gives_features_logits_and_images_of_the_documented_shapes(net, size):
    h, w = size
    clear, hazy = torch.rand(2, 3, h, w), torch.rand(2, 3, h, w)
    with torch.no_grad():
        out = net(clear, hazy)
    dim = net.feature_dim
    assert dim == (2048 if net.backbone in ("resnet50_ibn_a", "resnet101_ibn_a") else 512)
    for name in ("global_clear", "global_hazy", "feat_clear", "feat_hazy"):
        assert out[name].shape == (2, dim)
    assert out["logits_clear"].shape == out["logits_hazy"].shape == (2, 5)
    assert out["gen_clear"].shape == out["gen_hazy"].shape == (2, 3, h, w)


@pytest.mark.parametrize("size", SIZES)
def test_the_encoder_returns_the_quarter_size_map_and_the_half_size_stem_skip(net, size):
    h, w = size
    with torch.no_grad():
        encoded = net.enc_hazy(torch.rand(1, 3, h, w))
    channels = 256 if net.feature_dim == 2048 else 64
    assert encoded.feature.shape == (1, channels, h // 4, w // 4)
    assert encoded.skip.shape == (1, 64, h // 2, w // 2)
    with torch.no_grad():
        assert net.trunk(encoded.feature).shape == (1, net.feature_dim, h // 32, w // 32)


@pytest.mark.parametrize("size", [(98, 50), (97, 61), (35, 70)])
def test_generators_return_exactly_the_input_size_even_when_it_is_odd(size):
    net = RVSLNet("resnet18_ibn_a", num_classes=3).eval()
    images = torch.rand(1, 3, *size)
    with torch.no_grad():
        assert net.dehaze(images).shape == (1, 3, *size)
        assert net.add_haze(images).shape == (1, 3, *size)


def test_the_real_clear_cycle_translates_to_hazy_and_back():
    net = RVSLNet("resnet18_ibn_a", num_classes=3).eval()
    with torch.no_grad():
        out = net.forward_real_clear(torch.rand(2, 3, 64, 32))
    assert set(out) == {
        "global_clear",
        "global_hazy",
        "feat_clear",
        "feat_hazy",
        "gen_hazy",
        "cycle_clear",
    }
    assert out["gen_hazy"].shape == out["cycle_clear"].shape == (2, 3, 64, 32)


def test_the_real_hazy_cycle_translates_to_clear_and_back():
    net = RVSLNet("resnet18_ibn_a", num_classes=3).eval()
    with torch.no_grad():
        out = net.forward_real_hazy(torch.rand(2, 3, 64, 32))
    assert set(out) == {
        "global_clear",
        "global_hazy",
        "feat_clear",
        "feat_hazy",
        "gen_clear",
        "cycle_hazy",
    }
    assert out["gen_clear"].shape == out["cycle_hazy"].shape == (2, 3, 64, 32)


def test_the_real_hazy_cycle_computes_what_the_method_says():
    torch.manual_seed(0)
    net = RVSLNet("resnet18_ibn_a", num_classes=3).eval()
    z = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = net.forward_real_hazy(z)
        gen_clear = net.dehaze(z)
        torch.testing.assert_close(out["gen_clear"], gen_clear)
        torch.testing.assert_close(out["cycle_hazy"], net.add_haze(gen_clear))
        torch.testing.assert_close(out["feat_hazy"], net.embed(z, "hazy")["feat_hazy"])
        torch.testing.assert_close(out["feat_clear"], net.embed(gen_clear, "clear")["feat_clear"])


def test_evaluation_embeds_one_batch_through_both_branches():
    net = RVSLNet("resnet18_ibn_a", num_classes=3).eval()
    images = torch.rand(3, 3, 64, 32)
    with torch.no_grad():
        both = net.embed(images)
        hazy_only = net.embed(images, branch="hazy")
    assert set(both) == {"feat_clear", "feat_hazy"} and set(hazy_only) == {"feat_hazy"}
    torch.testing.assert_close(both["feat_hazy"], hazy_only["feat_hazy"])
    assert not torch.allclose(both["feat_clear"], both["feat_hazy"])
    with pytest.raises(ValueError, match="branch"):
        net.embed(images, branch="foggy")


def test_an_unknown_backbone_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="resnet50_ibn_a"):
        RVSLNet("resnet50", num_classes=3)


def test_the_bnneck_has_no_trainable_shift_and_the_classifier_no_bias():
    net = RVSLNet("resnet18_ibn_a", num_classes=7)
    assert not net.bnneck.bias.requires_grad and net.bnneck.bias.abs().sum() == 0
    assert net.classifier.bias is None and net.classifier.weight.shape == (7, 512)


@pytest.mark.parametrize("size", [(384, 384), (64, 32)])
def test_the_patch_discriminator_scores_one_patch_per_16_pixels(size):
    disc = PatchDiscriminator()
    with torch.no_grad():
        scores = disc(torch.rand(2, 3, *size))
    assert scores.shape == (2, 1, size[0] // 16, size[1] // 16)


def test_the_patch_discriminator_starts_from_the_cyclegan_init():
    torch.manual_seed(0)
    disc = PatchDiscriminator()
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    assert all(c.bias.abs().sum() == 0 for c in convs)
    assert convs[1].weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_one_training_step_sends_gradient_to_every_trainable_part():
    torch.manual_seed(0)
    net = RVSLNet("resnet18_ibn_a", num_classes=4).train()
    clear, hazy = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    out = net(clear, hazy)
    loss = sum(v.float().mean() for v in out.values())
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []


def test_a_narrower_backbone_scales_every_channel_count_and_keeps_the_layer_names():
    narrow = RVSLNet("resnet18_ibn_a", num_classes=5, generator_width=16, backbone_width=32)
    standard = RVSLNet("resnet18_ibn_a", num_classes=5)
    assert narrow.feature_dim == 256
    with torch.no_grad():
        out = narrow(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
        encoded = narrow.enc_hazy(torch.rand(1, 3, 64, 64))
    assert out["feat_hazy"].shape == (2, 256)
    assert out["gen_clear"].shape == (2, 3, 64, 64)
    assert encoded.feature.shape == (1, 32, 16, 16)
    assert encoded.skip.shape == (1, 32, 32, 32)
    assert narrow.state_dict().keys() == standard.state_dict().keys()
    assert RVSLNet(**narrow.config()).state_dict()["trunk.layer4.0.conv1.weight"].shape == (
        256,
        128,
        3,
        3,
    )


def test_the_standard_width_is_the_published_resnet():
    assert RVSLNet("resnet50_ibn_a").config()["backbone_width"] == 64
    assert RVSLNet("resnet50_ibn_a").enc_clear.conv1.weight.shape == (64, 3, 7, 7)


@pytest.mark.parametrize("width", [0, 12])
def test_a_backbone_width_that_is_not_a_multiple_of_8_is_refused(width):
    with pytest.raises(ValueError, match="multiple of 8"):
        RVSLNet("resnet18_ibn_a", backbone_width=width)


def test_the_discriminator_width_sets_its_first_layer():
    assert PatchDiscriminator(width=16).model[0].out_channels == 16
