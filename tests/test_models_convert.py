"""Official checkpoints convert into ours; foreign or unsafe files get a clear refusal."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from official_fill import official_filled_state_dict
from rvsl.cli.convert import main as convert_main
from rvsl.models import CheckpointError, load_net, load_official
from rvsl.models.checkpoint import load_untrusted


@pytest.fixture(scope="module")
def official_state():
    return official_filled_state_dict()


@pytest.fixture(scope="module")
def parity_inputs(reference_dir):
    arrays = np.load(reference_dir / "parity_64.npz")
    return torch.from_numpy(arrays["clear"]), torch.from_numpy(arrays["foggy"])


def stage2_style(state):
    """Stages 2/3 name the classifier ``syn_classifier``; DataParallel adds ``module.``."""
    renamed = {
        k.replace("classifier.", "syn_classifier.", 1) if k.startswith("classifier.") else k: v
        for k, v in state.items()
    }
    return {f"module.{k}": v for k, v in renamed.items()}


@pytest.mark.parametrize("style", ["stage1", "stage2"])
def test_converted_checkpoint_gives_the_same_outputs_as_the_official_weights(
    tmp_path, official_state, parity_inputs, style
):
    state = official_state if style == "stage1" else stage2_style(official_state)
    src, dst = tmp_path / "official.pth", tmp_path / "converted.ckpt"
    torch.save(state, src)
    assert convert_main([str(src), str(dst)]) == 0

    converted = load_net(dst).eval()
    reference = load_official(official_state)
    assert converted.backbone == "resnet50_ibn_a" and converted.num_classes == 10
    with torch.no_grad():
        got, want = converted(*parity_inputs), reference(*parity_inputs)
    for name in ("feat_clear", "feat_hazy", "gen_clear", "gen_hazy"):
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)


def test_converted_checkpoints_load_safely_with_weights_only(tmp_path, official_state):
    src, dst = tmp_path / "official.pth", tmp_path / "converted.ckpt"
    torch.save(official_state, src)
    convert_main([str(src), str(dst)])
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt["rvsl"]["net"] == {
        "backbone": "resnet50_ibn_a",
        "num_classes": 10,
        "generator_width": 64,
        "backbone_width": 64,
    }
    assert all(k.startswith("net.") for k in ckpt["state_dict"])


def test_convert_refuses_to_overwrite_an_existing_output_unless_forced(
    tmp_path, official_state, capsys
):
    src, dst = tmp_path / "official.pth", tmp_path / "converted.ckpt"
    torch.save(official_state, src)
    dst.write_text("precious")
    assert convert_main([str(src), str(dst)]) == 2
    assert "already exists" in capsys.readouterr().err and dst.read_text() == "precious"
    assert convert_main([str(src), str(dst), "--force"]) == 2  # --force replaces only its own
    assert "not a checkpoint rvsl wrote" in capsys.readouterr().err
    assert dst.read_text() == "precious"
    dst.unlink()
    assert convert_main([str(src), str(dst)]) == 0
    assert convert_main([str(src), str(dst), "--force"]) == 0
    assert convert_main([str(src), str(src), "--force"]) == 2  # never the official file


def test_a_file_that_is_not_an_rvsl_checkpoint_names_the_missing_key_groups(tmp_path, capsys):
    from torchvision.models import resnet18

    src = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), src)
    assert convert_main([str(src), str(tmp_path / "out.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "not an official RVSL checkpoint" in err
    for group in ("Ec", "Ef", "Dreid", "Dc", "Df", "bottleneck", "classifier|syn_classifier"):
        assert group in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.ckpt").exists()


def test_a_partial_checkpoint_names_only_the_groups_it_lacks(official_state):
    partial = {k: v for k, v in official_state.items() if not k.startswith(("Dc.", "Df."))}
    with pytest.raises(CheckpointError, match=r"key groups missing: Dc, Df \("):
        load_official(partial)


def test_unexpected_keys_in_an_official_checkpoint_are_listed(official_state):
    extra = dict(official_state, **{"Dreid.fc.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"Dreid\.fc\.weight"):
        load_official(extra)


def test_a_missing_file_and_a_non_pytorch_file_are_reported_by_name(tmp_path, capsys):
    assert convert_main([str(tmp_path / "nope.pth"), str(tmp_path / "o.ckpt")]) == 2
    assert "nope.pth: no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    assert convert_main([str(junk), str(tmp_path / "o.ckpt")]) == 2
    assert "junk.pth" in capsys.readouterr().err


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": _RunsCode(str(marker))}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_untrusted(evil)
    assert not marker.exists()


def test_load_net_points_official_files_to_the_converter(tmp_path, official_state):
    src = tmp_path / "official.pth"
    torch.save(official_state, src)
    with pytest.raises(CheckpointError, match="rvsl-convert"):
        load_net(src)
