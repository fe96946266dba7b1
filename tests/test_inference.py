"""The inference API: a checkpoint in, features and dehazed images out, for any kind of image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import rvsl
from rvsl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageReadError,
    build_eval_transform,
    to_float_image,
)
from rvsl.inference import DEFAULT_IMAGE_SIZE, Reidentifier
from rvsl.models import CheckpointError, RVSLNet, save_net
from rvsl.models.checkpoint import make_checkpoint

SIZE = (32, 32)


@pytest.fixture(scope="module")
def net() -> RVSLNet:
    torch.manual_seed(0)
    return RVSLNet("resnet18_ibn_a", num_classes=3, generator_width=8).eval()


@pytest.fixture(scope="module")
def ckpt_path(net, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_net(net, path)
    return path


@pytest.fixture(scope="module")
def reid(ckpt_path) -> Reidentifier:
    return Reidentifier.from_checkpoint(ckpt_path, image_size=SIZE)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    """Four uint8 images already at the model's size, so no resize blurs the comparisons."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (4, 3, *SIZE), generator=g, dtype=torch.uint8)


def test_a_loaded_checkpoint_gives_the_features_of_the_saved_network(net, reid, pixels):
    batch = pixels.float() / 255
    with torch.no_grad():
        want = net.embed(batch)
    for branch in ("hazy", "clear"):
        got = reid.embed(batch, branch=branch)
        assert got.dtype == torch.float32 and got.device.type == "cpu"
        assert got.shape == (4, reid.feature_dim)
        torch.testing.assert_close(got, want[f"feat_{branch}"], rtol=0, atol=0)


def test_the_image_size_is_the_argument_else_the_recorded_one_else_the_papers(net, tmp_path):
    plain = tmp_path / "plain.ckpt"
    save_net(net, plain)
    assert Reidentifier.from_checkpoint(plain).image_size == DEFAULT_IMAGE_SIZE == (384, 384)

    lightning = tmp_path / "lightning.ckpt"
    ckpt = make_checkpoint(net, stage="syn_haze")
    ckpt["datamodule_hyper_parameters"] = {"image_size": [48, 24], "normalize": False}
    torch.save(ckpt, lightning)
    assert Reidentifier.from_checkpoint(lightning).image_size == (48, 24)
    assert Reidentifier.from_checkpoint(lightning, image_size=40).image_size == (40, 40)


def test_a_run_trained_on_normalised_inputs_is_fed_normalised_inputs(net, tmp_path, pixels):
    path = tmp_path / "normalised.ckpt"
    ckpt = make_checkpoint(net)
    ckpt["datamodule_hyper_parameters"] = {"image_size": list(SIZE), "normalize": True}
    torch.save(ckpt, path)
    reid = Reidentifier.from_checkpoint(path)
    assert reid.normalize_input
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    batch = (pixels.float() / 255 - mean) / std
    with torch.no_grad():
        want = net.embed(batch, "hazy")["feat_hazy"]
        dehazed = (net.dehaze(batch) * std + mean).clamp(0, 1)
    torch.testing.assert_close(reid.embed(pixels), want)
    torch.testing.assert_close(reid.dehaze(pixels), dehazed)


def test_paths_pil_images_uint8_and_float_tensors_give_the_same_features(reid, pixels, tmp_path):
    paths = []
    for i, image in enumerate(pixels):
        paths.append(tmp_path / f"{i:04d}_c1.png")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    want = reid.embed(pixels)
    torch.testing.assert_close(reid.embed(to_float_image(pixels)), want, rtol=0, atol=0)
    torch.testing.assert_close(reid.embed(pixels / 255), want)  # x / 255 vs x * (1 / 255)
    torch.testing.assert_close(reid.embed(paths), want, rtol=0, atol=0)
    torch.testing.assert_close(reid.embed([str(p) for p in paths]), want, rtol=0, atol=0)
    torch.testing.assert_close(reid.embed([Image.open(p) for p in paths]), want, rtol=0, atol=0)
    torch.testing.assert_close(reid.embed([paths[0], pixels[1:]]), want, rtol=0, atol=0)
    assert reid.embed(paths[2]).shape == (1, reid.feature_dim)
    assert reid.embed(pixels[2]).shape == (1, reid.feature_dim)


def test_images_of_another_size_are_resized_like_the_eval_pipeline(net, reid):
    image = torch.rand(3, 40, 56)
    with torch.no_grad():
        want = net.embed(build_eval_transform(SIZE)(image)[None], "hazy")["feat_hazy"]
    torch.testing.assert_close(reid.embed(image), want)


def test_the_batch_size_does_not_change_the_features(reid, pixels):
    torch.testing.assert_close(reid.embed(pixels, batch_size=1), reid.embed(pixels, batch_size=4))
    torch.testing.assert_close(reid.embed(pixels, batch_size=3), reid.embed(pixels, batch_size=4))


def test_flip_averages_the_features_of_each_image_and_its_mirror_image(reid, pixels):
    manual = (reid.embed(pixels) + reid.embed(pixels.flip(-1))) / 2
    torch.testing.assert_close(reid.embed(pixels, flip=True), manual)


def test_normalize_gives_unit_length_features_in_the_same_direction(reid, pixels):
    raw, unit = reid.embed(pixels, flip=True), reid.embed(pixels, flip=True, normalize=True)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(unit * raw.norm(dim=1, keepdim=True), raw)


def test_results_are_ordinary_tensors_the_caller_may_edit(reid, pixels):
    feats = reid.embed(pixels)
    feats.mul_(2)  # an inference-mode tensor would refuse this
    assert not feats.is_inference()


def test_dehaze_returns_images_in_unit_range_at_the_model_size(net, reid, pixels):
    big = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8)
    out = reid.dehaze(big, batch_size=1)
    assert out.shape == (2, 3, *SIZE) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    with torch.no_grad():
        want = net.dehaze(pixels.float() / 255).clamp(0, 1)
    torch.testing.assert_close(reid.dehaze(pixels), want)


def test_a_gallery_image_is_its_own_nearest_neighbour(reid, pixels):
    gallery = reid.embed(pixels)
    query = reid.embed(pixels[[2, 0]])
    dist = Reidentifier.distance(query, gallery)
    assert dist.shape == (2, 4)
    assert reid.rank(query, gallery, top_k=1).flatten().tolist() == [2, 0]
    assert reid.rank(query, gallery).tolist() == dist.argsort(dim=1).tolist()


@pytest.fixture
def png_files(pixels, tmp_path) -> list[Path]:
    """The four ``pixels`` images as PNG files (lossless: the same features as the tensors)."""
    paths = []
    for i, image in enumerate(pixels):
        paths.append(tmp_path / f"{i:04d}_c1.png")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    return paths


def test_files_decoded_by_loader_workers_give_the_same_features(reid, pixels, png_files):
    files = png_files + png_files[:1]  # 5 files in batches of 2: a short last batch
    want = reid.embed(pixels[[0, 1, 2, 3, 0]], batch_size=2, flip=True)  # the same batches
    for workers in (0, 2):
        got = reid.embed(files, batch_size=2, flip=True, num_workers=workers)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_workers"):
        reid.embed(files, num_workers=-1)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_file_among_good_ones_is_named_with_or_without_workers(reid, png_files, workers):
    corrupt = png_files[0].parent / "0009_c3_corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not a jpeg")
    files = [*png_files, corrupt, png_files[0].parent / "0010_c1_gone.png"]
    with pytest.raises(ImageReadError, match=r"cannot read image .*0009_c3_corrupt\.jpg"):
        reid.embed(files, batch_size=2, num_workers=workers)


def test_top_k_ranking_is_the_first_k_of_the_stable_argsort(monkeypatch):
    g = torch.Generator().manual_seed(2)
    query, gallery = torch.randn(7, 16, generator=g), torch.randn(50, 16, generator=g)
    for metric in ("euclidean", "cosine"):
        order = Reidentifier.distance(query, gallery, metric).argsort(dim=1, stable=True)
        for k in (1, 5, 50, 80):  # beyond the gallery: all of it
            got = Reidentifier.rank(query, gallery, top_k=k, metric=metric)
            assert got.dtype == torch.long and torch.equal(got, order[:, :k])
    # ties, also at the cut: equal distances keep gallery order, whichever topk picked
    tied = gallery[torch.tensor([3, 1, 3, 3, 0, 1, 3, 2] * 4)]
    order = Reidentifier.distance(query, tied).argsort(dim=1, stable=True)
    monkeypatch.setattr("rvsl.inference.reidentifier.RANK_CHUNK_ELEMENTS", 64)  # 2 rows a chunk
    for k in range(1, len(tied) + 1):
        assert torch.equal(Reidentifier.rank(query, tied, top_k=k), order[:, :k])
    assert Reidentifier.rank(query, tied, top_k=0).shape == (7, 0)
    with pytest.raises(ValueError, match="top_k"):
        Reidentifier.rank(query, tied, top_k=-1)


def test_nan_distances_rank_last_as_in_argsort():
    query, gallery = torch.randn(2, 4), torch.randn(6, 4)
    gallery[[1, 4]] = float("nan")
    order = Reidentifier.distance(query, gallery).argsort(dim=1, stable=True)
    assert torch.equal(Reidentifier.rank(query, gallery, top_k=5), order[:, :5])


def test_the_branch_must_be_clear_or_hazy(reid, pixels):
    for branch in ("both", "foggy"):
        with pytest.raises(ValueError, match="branch must be one of"):
            reid.embed(pixels, branch=branch)


def test_inputs_that_are_not_images_are_refused_clearly(reid):
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        reid.embed(torch.rand(3, *SIZE) * 255)  # 0-255 floats, or already normalised
    with pytest.raises(ValueError, match=r"shape \(1, 32, 32\)"):
        reid.embed(torch.rand(1, *SIZE))
    with pytest.raises(TypeError, match="int"):
        reid.embed(3)
    with pytest.raises(ValueError, match="batch_size"):
        reid.embed(torch.rand(3, *SIZE), batch_size=0)


def test_unreadable_and_missing_image_files_are_named(reid, tmp_path, pixels):
    corrupt = tmp_path / "0007_c2_corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    with pytest.raises(ImageReadError, match=r"0007_c2_corrupt\.png"):
        reid.embed([pixels[0], corrupt])
    with pytest.raises(ImageReadError, match=r"gone\.jpg"):
        reid.dehaze(tmp_path / "gone.jpg")


def test_files_that_are_not_checkpoints_raise_checkpoint_error(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.ckpt"):
        Reidentifier.from_checkpoint(text)
    other = tmp_path / "other_model.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match=r"other_model\.pth.*rvsl-convert"):
        Reidentifier.from_checkpoint(other)
    with pytest.raises(CheckpointError, match="no such file"):
        Reidentifier.from_checkpoint(tmp_path / "missing.ckpt")


def _official_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict under the authors' names (the inverse of rvsl.models.convert)."""
    parts = {"enc_clear": "Ec", "enc_hazy": "Ef", "trunk": "Dreid", "gen_clear": "Dc"}
    parts |= {"gen_hazy": "Df", "bnneck": "bottleneck", "classifier": "classifier"}
    blocks = {"block1.": "DC1.double_conv.", "block2.": "DC2.double_conv."}
    blocks |= {"block3.": "DC3.double_conv.", "out.": "OutConv."}
    renamed = {}
    for key, value in state.items():
        part, _, rest = key.partition(".")
        if part.startswith("gen_"):
            for ours, theirs in blocks.items():
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours) :]
        renamed[f"module.{parts[part]}.{rest}"] = value
    return renamed


def test_the_authors_raw_weights_load_without_conversion(tmp_path, pixels):
    net = RVSLNet("resnet18_ibn_a", num_classes=3).eval()  # official generators are 64 wide
    path = tmp_path / "Stage3_Model.pth"
    torch.save(_official_names(net.state_dict()), path)
    reid = Reidentifier.from_checkpoint(path, image_size=SIZE)
    batch = to_float_image(pixels)
    with torch.no_grad():
        want = net.embed(batch, "hazy")["feat_hazy"]
    torch.testing.assert_close(reid.embed(batch), want, rtol=0, atol=0)


def test_the_reidentifier_describes_itself(reid):
    assert reid.device == torch.device("cpu")
    assert reid.feature_dim == 512 and reid.image_size == SIZE
    assert repr(reid) == (
        "Reidentifier(backbone='resnet18_ibn_a', feature_dim=512, image_size=(32, 32), "
        "device='cpu', normalize_input=False)"
    )


def test_rvsl_reidentifier_is_reachable_and_import_rvsl_stays_light():
    assert rvsl.Reidentifier is Reidentifier
    code = "import sys, rvsl; assert 'torch' not in sys.modules, 'import rvsl loaded torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
