"""Train/eval pipelines: shared random draws for pairs, output range and size, read errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from conftest_data import write_image
from rvsl.data.transforms import (
    ImageReadError,
    RandomScaleCenterCrop,
    build_eval_transform,
    build_train_transform,
    load_image,
)

SIZE = (24, 12)  # non-square training size (H, W)


@pytest.fixture
def image(tmp_path: Path) -> tv_tensors.Image:
    return load_image(write_image(tmp_path / "0001_c1_0.png", seed=3))


def _image(seed: int) -> tv_tensors.Image:
    g = torch.Generator().manual_seed(seed)
    return tv_tensors.Image(torch.randint(16, 256, (3, 32, 16), generator=g, dtype=torch.uint8))


def test_load_image_gives_rgb_uint8_image(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    from PIL import Image

    Image.new("L", (5, 7), 128).save(path)
    img = load_image(path)
    assert isinstance(img, tv_tensors.Image)
    assert img.shape == (3, 7, 5) and img.dtype == torch.uint8


def test_unreadable_image_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "0001_c1_broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match=r"0001_c1_broken\.png"):
        load_image(bad)
    with pytest.raises(ImageReadError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png")


def test_train_transform_outputs_float_in_unit_range_at_training_size(
    image: tv_tensors.Image,
) -> None:
    out = build_train_transform(SIZE)(image)
    assert out.shape == (3, *SIZE) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_train_transform_accepts_pil_images(tmp_path: Path) -> None:
    from PIL import Image

    pil = Image.open(write_image(tmp_path / "a.png", 1)).convert("RGB")
    assert build_train_transform(SIZE)(pil).shape == (3, *SIZE)


def test_paired_transform_applies_identical_crop_flip_and_erase_to_both_images() -> None:
    transform = build_train_transform(SIZE, erase_p=0.5)
    torch.manual_seed(0)
    for seed in range(30):
        img = _image(seed)
        clear, hazy = transform((img, img.clone()))
        assert torch.equal(clear, hazy)


def test_paired_transform_draws_vary_across_calls() -> None:
    transform = build_train_transform(SIZE)
    img = _image(0)
    torch.manual_seed(0)
    outputs = [transform((img, img))[0] for _ in range(40)]
    distinct = {tuple(o.flatten()[::7].tolist()) for o in outputs}
    assert len(distinct) > 10
    erased = [bool((o == 0).any()) for o in outputs]  # inputs are >= 16, so 0 means erased
    assert 5 < sum(erased) < 35


def test_random_erasing_erases_the_same_region_in_different_images() -> None:
    erase = v2.RandomErasing(p=1.0, scale=(0.1, 0.3), value=0.0)
    torch.manual_seed(0)
    for seed in range(10):
        a = v2.functional.to_dtype(_image(seed), torch.float32, scale=True)
        b = v2.functional.to_dtype(_image(seed + 100), torch.float32, scale=True)
        ea, eb = erase((a, b))
        mask_a, mask_b = (ea == 0).all(0), (eb == 0).all(0)
        assert mask_a.any() and torch.equal(mask_a, mask_b)


def test_paired_flip_is_shared_on_different_images() -> None:
    transform = build_train_transform(SIZE, scale=(1.0, 1.0), erase_p=0.0, flip_p=0.5)
    a, b = _image(1), _image(2)
    reference = build_eval_transform(SIZE)
    ra, rb = reference(a), reference(b)
    torch.manual_seed(0)
    flips = []
    for _ in range(20):
        ta, tb = transform((a, b))
        fa = torch.equal(ta, ra.flip(-1))
        fb = torch.equal(tb, rb.flip(-1))
        assert fa == fb
        assert fa or (torch.equal(ta, ra) and torch.equal(tb, rb))
        flips.append(fa)
    assert 0 < sum(flips) < 20


def test_random_scale_center_crop_zooms_by_a_factor_in_range() -> None:
    crop = RandomScaleCenterCrop((20, 10), scale=(1.0, 1.2))
    torch.manual_seed(0)
    sizes = {crop.make_params([])["resized"] for _ in range(50)}
    assert all(20 <= h <= 24 and 10 <= w <= 12 for h, w in sizes)
    assert len(sizes) > 1
    assert crop(_image(0)).shape == (3, 20, 10)


def test_eval_transform_resizes_without_randomness(image: tv_tensors.Image) -> None:
    transform = build_eval_transform(SIZE)
    out = transform(image)
    assert out.shape == (3, *SIZE) and out.dtype == torch.float32
    assert torch.equal(out, transform(image))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_normalize_flag_applies_mean_and_std(image: tv_tensors.Image) -> None:
    plain = build_eval_transform(SIZE)(image)
    normed = build_eval_transform(SIZE, normalize=True, mean=(0.5,) * 3, std=(0.25,) * 3)(image)
    torch.testing.assert_close(normed, (plain - 0.5) / 0.25)
