"""ONNX export: ONNX Runtime matches PyTorch at two batch sizes; manifest; rvsl-export CLI."""

from __future__ import annotations

import json
import runpy
import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from rvsl.cli.export import main
from rvsl.export import (
    MANIFEST,
    ExportError,
    check_settings,
    export_checkpoint,
    export_onnx,
    verify_onnx,
)
from rvsl.export.onnx import trace_size
from rvsl.models import RVSLNet, save_net

ort = pytest.importorskip("onnxruntime")

# H and W not multiples of 4: the generator then crops after upsampling, the case the
# TorchScript exporter gets wrong through the generator's own code (see DehazeModel).
SIZE = (38, 30)
TOL = 1e-4


def _tiny_net() -> RVSLNet:
    """Tiny random net whose BatchNorm affine and running stats are far from the identity."""
    torch.manual_seed(0)
    net = RVSLNet("resnet18_ibn_a", num_classes=4, generator_width=8)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.5
                module.weight.uniform_(0.75, 1.25)
                module.bias.uniform_(-0.1, 0.1)
        net.train()
        for _ in range(3):
            net(torch.rand(4, 3, *SIZE) * 2 + 0.5, torch.rand(4, 3, *SIZE))
    return net


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    net = _tiny_net()
    out = tmp_path_factory.mktemp("onnx")
    paths = export_onnx(net, out, SIZE, opset=17, branch="hazy")
    return net, paths


def test_running_stats_are_non_trivial(exported):
    net, _ = exported
    bn = net.trunk.layer4[0].bn1
    assert bn.running_mean.abs().max() > 0.05
    assert (bn.running_var - 1).abs().max() > 0.05


def test_export_leaves_the_network_as_it_was(exported):
    net, _ = exported
    assert net.training and all(m.training for m in net.modules())


def test_onnxruntime_matches_pytorch_at_two_batch_sizes(exported):
    net, paths = exported
    assert {p.name for p in paths.values()} == {"embed_hazy.onnx", "dehaze.onnx", "export.json"}
    net = net.eval()
    try:
        embed = ort.InferenceSession(str(paths["embed"]), providers=["CPUExecutionProvider"])
        dehaze = ort.InferenceSession(str(paths["dehaze"]), providers=["CPUExecutionProvider"])
        assert embed.get_inputs()[0].shape == ["batch", 3, *SIZE]
        assert embed.get_outputs()[0].shape == ["batch", net.feature_dim]
        assert dehaze.get_inputs()[0].shape == ["batch", 3, *SIZE]
        for batch in (1, 3):
            images = torch.rand(batch, 3, *SIZE)
            with torch.no_grad():
                feats = net.embed(images, "hazy")["feat_hazy"].numpy()
                clear = net.dehaze(images).numpy()
            (got_feats,) = embed.run(["features"], {"images": images.numpy()})
            (got_clear,) = dehaze.run(["dehazed"], {"hazy": images.numpy()})
            assert got_feats.shape == feats.shape == (batch, net.feature_dim)
            assert got_clear.shape == clear.shape == (batch, 3, *SIZE)
            assert np.abs(got_feats - feats).max() <= TOL
            assert np.abs(got_clear - clear).max() <= TOL
    finally:
        net.train()


def test_verify_onnx_reports_small_errors(exported):
    net, paths = exported
    errors = verify_onnx(net, paths, SIZE, batch=3)
    assert set(errors) == {"features@1", "features@3", "dehazed@1", "dehazed@3"}
    assert all(0 <= e <= TOL for e in errors.values()), errors


def test_manifest(exported):
    net, paths = exported
    manifest = json.loads(paths["manifest"].read_text())
    assert manifest["backbone"] == "resnet18_ibn_a"
    assert manifest["feature_dim"] == net.feature_dim == 512
    assert manifest["image_size"] == list(SIZE) and manifest["dynamic_size"] is False
    assert manifest["input"]["layout"].endswith("H and W fixed")
    assert manifest["branch"] == "hazy"
    assert manifest["opset"] == 17
    assert manifest["input"]["normalize"] is False
    assert manifest["input"]["mean"] == [0.0] * 3 and manifest["input"]["std"] == [1.0] * 3
    assert manifest["files"]["embed"]["file"] == "embed_hazy.onnx"
    assert manifest["files"]["dehaze"]["file"] == "dehaze.onnx"
    for entry in manifest["files"].values():
        assert (paths["manifest"].parent / entry["file"]).is_file()


def test_cli_end_to_end(exported, tmp_path, monkeypatch, capsys):
    """Explicit settings win over what the checkpoint records; the Hydra app writes nothing
    but ``out`` (no run folder, no .hydra/, no log file)."""
    net, _ = exported
    ckpt = tmp_path / "net.ckpt"
    save_net(net, ckpt, image_size=list(SIZE), normalize=False)
    out = tmp_path / "onnx"
    monkeypatch.chdir(tmp_path)
    args = [f"checkpoint={ckpt}", f"out={out}", "image_size=32", "branch=clear", "opset=13"]
    assert main([*args, "normalize=true"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "embed_clear.onnx") in printed and str(out / "dehaze.onnx") in printed
    assert "features@1" in printed and "dehazed@3" in printed
    assert "image size 32 x 32 (image_size=), normalize=true (normalize=)" in printed
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["image_size"] == [32, 32] and manifest["opset"] == 13
    assert manifest["branch"] == "clear" and manifest["input"]["normalize"] is True
    assert manifest["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.ckpt", "onnx"]
    assert sorted(p.name for p in out.iterdir()) == ["dehaze.onnx", "embed_clear.onnx", MANIFEST]


def test_cli_takes_image_size_and_normalisation_from_the_checkpoint(exported, tmp_path, capsys):
    net, _ = exported
    ckpt = tmp_path / "net.ckpt"
    save_net(net, ckpt, image_size=list(SIZE), normalize=True)  # as a training run records them
    assert main([f"checkpoint={ckpt}", f"out={tmp_path / 'onnx'}"]) == 0
    printed = capsys.readouterr().out
    assert f"image size {SIZE[0]} x {SIZE[1]} (recorded in the checkpoint)" in printed
    assert "normalize=true (the checkpoint's)" in printed
    manifest = json.loads((tmp_path / "onnx" / MANIFEST).read_text())
    assert manifest["image_size"] == list(SIZE) and manifest["input"]["normalize"] is True


def test_without_a_recorded_size_the_inference_default_is_used_and_said(
    exported, tmp_path, monkeypatch
):
    net, _ = exported
    ckpt = tmp_path / "net.ckpt"
    save_net(net, ckpt)  # records neither size nor normalisation
    monkeypatch.setattr(
        "rvsl.inference.reidentifier.DEFAULT_IMAGE_SIZE", (34, 30)
    )  # 384 is slow here
    result = export_checkpoint(ckpt, tmp_path / "onnx")
    assert result.image_size == (34, 30) and result.image_size_source == "default"
    assert result.normalize is False and result.normalize_source == "checkpoint"
    assert result.verified and set(result.errors) == {
        "features@1",
        "features@3",
        "dehazed@1",
        "dehazed@3",
    }


def test_dynamic_size_models_take_other_sizes_and_are_checked_at_a_second_one(exported, tmp_path):
    net, _ = exported
    ckpt = tmp_path / "net.ckpt"
    save_net(net, ckpt, image_size=list(SIZE))
    result = export_checkpoint(ckpt, tmp_path / "onnx", dynamic_size=True)
    other = (SIZE[0] + 33, SIZE[1] + 34)
    assert result.dynamic_size and result.checked_sizes == (SIZE, other)
    suffix = f"@{other[0]}x{other[1]}"
    names = ("features@1", "features@3", "dehazed@1", "dehazed@3")
    assert set(result.errors) == {*names, *(n + suffix for n in names)}
    assert result.verified, result.errors
    # at the recorded size as tight as a fixed-size export; at 71 x 64 the features (values up
    # to ~25) differ by ~1e-4 in float32, as a fixed-size export at 71 x 64 does too
    assert all(result.errors[n] <= TOL for n in names), result.errors
    assert all(result.errors[n + suffix] <= 2 * TOL for n in names), result.errors
    manifest = json.loads(result.paths["manifest"].read_text())
    assert manifest["dynamic_size"] is True and manifest["image_size"] == list(SIZE)
    assert "H and W axes dynamic" in manifest["input"]["layout"]
    assert manifest["files"]["dehaze"]["output_shape"] == ["batch", 3, "height", "width"]

    # traced at 41 x 33 (1 mod 4): right at every H, W mod 4, non-square, odd and even
    embed = ort.InferenceSession(str(result.paths["embed"]), providers=["CPUExecutionProvider"])
    dehaze = ort.InferenceSession(str(result.paths["dehaze"]), providers=["CPUExecutionProvider"])
    assert embed.get_inputs()[0].shape == dehaze.get_inputs()[0].shape
    assert embed.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    assert dehaze.get_outputs()[0].shape == ["batch", 3, "height", "width"]
    net = net.eval()
    try:
        for size in [(32, 35), (34, 33), (35, 36), (48, 17)]:
            images = torch.rand(2, 3, *size)
            with torch.no_grad():
                feats = net.embed(images, "hazy")["feat_hazy"].numpy()
                clear = net.dehaze(images).numpy()
            (got_feats,) = embed.run(["features"], {"images": images.numpy()})
            (got_clear,) = dehaze.run(["dehazed"], {"hazy": images.numpy()})
            assert got_clear.shape == clear.shape == (2, 3, *size)
            assert np.abs(got_feats - feats).max() <= 2 * TOL
            assert np.abs(got_clear - clear).max() <= TOL
    finally:
        net.train()


def test_a_dynamic_size_export_traces_where_the_generator_crops_on_both_axes():
    assert trace_size(SIZE) == (41, 33)
    assert trace_size(64) == (65, 65) and trace_size((37, 33)) == (37, 33)
    with pytest.raises(ExportError, match="dynamic_size must be true or false"):
        check_settings(dynamic_size="yes")


def test_help(capsys):
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: rvsl-export checkpoint=PATH out=DIR")


def test_cfg_job_shows_the_composed_settings(capsys):
    """A real Hydra app: Hydra's flags work, and the defaults are conf/export.yaml's."""
    assert main(["--cfg", "job", "checkpoint=c.ckpt", "out=o", "image_size=[32,30]"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == {
        "checkpoint": "c.ckpt",
        "out": "o",
        "image_size": [32, 30],
        "branch": "hazy",
        "opset": 17,
        "normalize": None,
        "dynamic_size": False,
    }


def test_python_dash_m_exit_code(tmp_path, monkeypatch, capsys):
    """``python -m rvsl.cli.export`` (runpy, as -m does, without a second interpreter)."""
    argv = ["rvsl-export", f"out={tmp_path}", "checkpoint=x", "bad=1"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delitem(sys.modules, "rvsl.cli.export")  # run it fresh, as -m would
    with pytest.raises(SystemExit) as done:
        runpy.run_module("rvsl.cli.export", run_name="__main__")
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "rvsl-export: error: unknown argument 'bad': expected one of "
        "checkpoint, out, image_size, branch, opset, normalize, dynamic_size\n"
    )


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "foreign.ckpt")
    (tmp_path / "taken").write_text("a file")
    save_net(RVSLNet("resnet18_ibn_a", generator_width=8), tmp_path / "ok.ckpt")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkpoint={d}/missing.ckpt", "out={d}/o"], "missing.ckpt: no such file"),
        (["checkpoint={d}/junk.ckpt", "out={d}/o"], "junk.ckpt: "),  # load_untrusted's words
        (["checkpoint={d}/foreign.ckpt", "out={d}/o"], "not an rvsl checkpoint"),
        (["checkpoint={d}/ok.ckpt", "out={d}/o", "size=32"], "unknown argument 'size'"),
        (["checkpoint={d}/ok.ckpt", "out={d}/o", "image_size"], "malformed argument"),
        (["checkpoint={d}/ok.ckpt", "out={d}/o", "image_size=big"], "image_size must be"),
        (["checkpoint={d}/ok.ckpt", "out={d}/o", "branch=fog"], "branch must be"),
        (["checkpoint={d}/ok.ckpt", "out={d}/o", "opset=99"], "opset must be"),
        (["checkpoint={d}/ok.ckpt", "out={d}/taken"], "is an existing file"),
        (["out={d}/o"], "missing argument checkpoint="),
        (["checkpoint={d}/ok.ckpt"], "missing argument out="),
        (["checkpoint={d}/ok.ckpt", "out={d}/o", "normalize=yes"], "normalize must be"),
        (["checkpoint={d}/ok.ckpt", "out={d}/o", "image_size=[8,8]"], "is too small"),
        (["checkpoint={d}/ok.ckpt", "out={d}/o", "out={d}/p"], "given twice"),
    ],
)
def test_cli_bad_input(bad_files, capsys, args, message):
    code = main([a.format(d=bad_files) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.startswith("rvsl-export: error: ") and err.count("\n") == 1
    assert not (bad_files / "o").exists()
