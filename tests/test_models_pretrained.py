"""ImageNet weights come from a local file, in IBN-Net or torchvision format, never a download."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18, resnet50

from rvsl.models import CheckpointError, PretrainedWeightsError, RVSLNet, load_pretrained_backbone


def ibn_net_release_file(path, backbone):
    """An IBN-Net-style release file: ``state_dict`` of a DataParallel model, with ``fc``."""
    torch.manual_seed(1)
    donor = RVSLNet(backbone, num_classes=2)
    state = {f"module.{k}": v for k, v in donor.enc_clear.state_dict().items()}
    state |= {f"module.{k}": v for k, v in donor.trunk.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1000, donor.feature_dim)
    state["module.fc.bias"] = torch.zeros(1000)
    torch.save({"state_dict": state, "epoch": 100}, path)
    return donor


@pytest.mark.parametrize("backbone", ["resnet18_ibn_a", "resnet50_ibn_a"])
def test_an_ibn_net_release_checkpoint_initialises_both_encoders_and_the_trunk(tmp_path, backbone):
    donor = ibn_net_release_file(tmp_path / "ibn.pth", backbone)
    net = RVSLNet(backbone, num_classes=5)
    load_pretrained_backbone(net, tmp_path / "ibn.pth")
    for encoder in (net.enc_clear, net.enc_hazy):
        for k, v in donor.enc_clear.state_dict().items():
            torch.testing.assert_close(encoder.state_dict()[k], v)
    for k, v in donor.trunk.state_dict().items():
        torch.testing.assert_close(net.trunk.state_dict()[k], v)


@pytest.mark.parametrize(
    ("backbone", "factory"), [("resnet18_ibn_a", resnet18), ("resnet50_ibn_a", resnet50)]
)
def test_a_torchvision_resnet_splits_its_first_batchnorms_into_the_ibn_halves(
    tmp_path, backbone, factory
):
    torch.manual_seed(2)
    donor = factory(weights=None)
    with torch.no_grad():  # make the statistics distinguishable
        for m in donor.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-1, 1)
    torch.save(donor.state_dict(), tmp_path / "tv.pth")
    net = RVSLNet(backbone, num_classes=5)
    load_pretrained_backbone(net, tmp_path / "tv.pth")

    tv = donor.state_dict()
    torch.testing.assert_close(net.enc_hazy.conv1.weight, tv["conv1.weight"])
    ibn = net.enc_clear.layer1[0].bn1
    half = ibn.half
    torch.testing.assert_close(ibn.IN.weight, tv["layer1.0.bn1.weight"][:half])
    torch.testing.assert_close(ibn.BN.weight, tv["layer1.0.bn1.weight"][half:])
    torch.testing.assert_close(ibn.BN.running_mean, tv["layer1.0.bn1.running_mean"][half:])
    torch.testing.assert_close(net.trunk.layer3[1].bn1.IN.bias, tv["layer3.1.bn1.bias"][:128])
    torch.testing.assert_close(net.trunk.layer4[0].bn1.weight, tv["layer4.0.bn1.weight"])
    torch.testing.assert_close(
        net.trunk.layer4[0].downsample[0].weight, tv["layer4.0.downsample.0.weight"]
    )


def test_missing_pretrained_keys_are_listed_by_name(tmp_path):
    state = resnet18(weights=None).state_dict()
    del state["layer2.0.conv1.weight"], state["layer4.1.bn2.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(PretrainedWeightsError) as err:
        load_pretrained_backbone(RVSLNet("resnet18_ibn_a", 3), tmp_path / "broken.pth")
    assert "layer2.0.conv1.weight" in str(err.value) and "layer4.1.bn2.bias" in str(err.value)


def test_weights_of_another_depth_are_refused_with_the_offending_keys(tmp_path):
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(PretrainedWeightsError, match=r"resnet50_ibn_a.*missing keys: .*conv3"):
        load_pretrained_backbone(RVSLNet("resnet50_ibn_a", 3), tmp_path / "r18.pth")


def test_a_missing_pretrained_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_pretrained_backbone(RVSLNet("resnet18_ibn_a", 3), tmp_path / "absent.pth")
