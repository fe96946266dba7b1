"""The network matches the official RVSL Stage-1 model tensor for tensor (shared/reference)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from official_fill import official_filled_state_dict, official_keys
from rvsl.models import load_official

IMAGE_TOLERANCE = {"atol": 1e-4, "rtol": 0.0}
TRUNK_TOLERANCE = {"atol": 1e-3, "rtol": 1e-3}


@pytest.fixture(scope="module")
def fixture_arrays(reference_dir):
    return dict(np.load(reference_dir / "parity_64.npz"))


@pytest.fixture(scope="module")
def official_net():
    return load_official(official_filled_state_dict(), image_size=(64, 64))


@pytest.fixture(scope="module")
def outputs(official_net, fixture_arrays):
    clear = torch.from_numpy(fixture_arrays["clear"])
    foggy = torch.from_numpy(fixture_arrays["foggy"])
    net = official_net
    with torch.no_grad():
        out = net(clear, foggy)
        encoded = net.enc_clear(clear)
        r2 = net.trunk.layer2(encoded.feature)
        r3 = net.trunk.layer3(r2)
        r4 = net.trunk.layer4(r3)
    return {
        "Feat_clear": out["feat_clear"],
        "Feat_foggy": out["feat_hazy"],
        "GAN_clear": out["gen_clear"],
        "GAN_foggy": out["gen_hazy"],
        "GlobalFeat_clear": out["global_clear"],
        "Ec_clear": encoded.feature,
        "EcStem_clear": encoded.skip,
        "Dreid_r2_clear": r2,
        "Dreid_r3_clear": r3,
        "Dreid_r4_clear": r4,
    }


def test_the_weight_fill_reproduces_the_reference_checksums(reference_dir):
    filled = official_filled_state_dict()
    with open(reference_dir / "official_stage1_fill_checksums.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["key"] for r in rows] == list(filled)
    for row in rows:
        tensor = filled[row["key"]].double()
        assert tensor.sum().item() == pytest.approx(float(row["sum_float64"]), rel=1e-9, abs=1e-9)
        assert tensor.abs().sum().item() == pytest.approx(float(row["abs_sum_float64"]), rel=1e-9)


def test_the_official_state_dict_loads_with_every_key_used(official_net):
    ours = official_net.state_dict()
    assert len(ours) == len(official_keys()) == 510


@pytest.mark.parametrize("name", ["EcStem_clear", "Ec_clear", "GAN_clear", "GAN_foggy"])
def test_encoder_maps_and_generated_images_match_the_official_model(outputs, fixture_arrays, name):
    np.testing.assert_allclose(outputs[name].numpy(), fixture_arrays[name], **IMAGE_TOLERANCE)


@pytest.mark.parametrize(
    "name",
    [
        "Dreid_r2_clear",
        "Dreid_r3_clear",
        "Dreid_r4_clear",
        "GlobalFeat_clear",
        "Feat_clear",
        "Feat_foggy",
    ],
)
def test_trunk_maps_and_features_match_the_official_model(outputs, fixture_arrays, name):
    np.testing.assert_allclose(outputs[name].numpy(), fixture_arrays[name], **TRUNK_TOLERANCE)


def test_the_bnneck_applies_its_loaded_bias(official_net, outputs):
    # the fixture's BNNeck bias is non-zero: ignoring it would shift the features by ~0.02
    assert official_net.bnneck.bias.abs().max() > 0.01
    assert not official_net.bnneck.bias.requires_grad


def test_load_official_returns_the_network_in_eval_mode(official_net):
    assert not official_net.training


def test_load_official_refuses_an_input_of_another_size_than_declared(official_net):
    with pytest.raises(ValueError, match="built for"):
        official_net(torch.zeros(1, 3, 64, 32), torch.zeros(1, 3, 64, 32))
