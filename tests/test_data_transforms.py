"""Train/eval pipelines: shared random draws for pairs, output range and size, read errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from conftest_data import write_image
from rvsl.data.datamodule import RVSLDataModule
from rvsl.data.transforms import (
    ERASE_MEAN,
    ImageReadError,
    RandomErasingDraws,
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


REFERENCE = dict(
    erase_fill="mean", erase_ratio_sampling="uniform", erase_attempts=100, scale_jitter="per_axis"
)


def test_default_train_transform_is_unchanged_bit_for_bit() -> None:
    before = v2.Compose(
        [
            v2.ToImage(),
            RandomScaleCenterCrop(SIZE, (1.0, 1.2)),
            v2.RandomHorizontalFlip(0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3), value=0.0),
        ]
    )
    now = build_train_transform(SIZE)
    for seed in range(20):
        img = _image(seed)
        torch.manual_seed(seed)
        expected = before(img)
        torch.manual_seed(seed)
        assert torch.equal(now(img), expected)


def test_log_uniform_draws_with_ten_attempts_match_torchvision() -> None:
    ours = RandomErasingDraws(p=1.0, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3), attempts=10)
    theirs = v2.RandomErasing(p=1.0, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3))
    img = _image(0)
    for seed in range(50):
        torch.manual_seed(seed)
        expected = theirs.make_params([img])
        torch.manual_seed(seed)
        got = ours.make_params([img])
        assert {k: got[k] for k in "ijhw"} == {k: expected[k] for k in "ijhw"}


def test_mean_fill_paints_the_reference_channel_means_in_the_erased_rectangle() -> None:
    plain = build_train_transform(SIZE, scale=(1.0, 1.0), flip_p=0.0, erase_p=0.0)
    erasing = build_train_transform(
        SIZE, scale=(1.0, 1.0), flip_p=0.0, erase_p=1.0, erase_fill="mean"
    )
    fill = torch.tensor(ERASE_MEAN, dtype=torch.float32)[:, None]
    torch.manual_seed(0)
    for seed in range(10):
        img = _image(seed)
        reference, out = plain(img), erasing(img)
        changed = (out != reference).any(0)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        assert changed.any()
        # the changed pixels form one rectangle, filled with the exact per-channel means
        assert changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert torch.equal(out[:, changed], fill.expand(3, int(changed.sum())))


def _ratios(sampling: str, n: int = 2000) -> torch.Tensor:
    """Aspect ratios (h / w) of rectangles erased from a large image with a tiny, fixed area."""
    erase = RandomErasingDraws(
        p=1.0, scale=(0.01, 0.01), ratio=(0.3, 1 / 0.3), ratio_sampling=sampling, attempts=1
    )
    big = [tv_tensors.Image(torch.empty(3, 2000, 2000, dtype=torch.uint8))]
    torch.manual_seed(0)
    draws = [erase.make_params(big) for _ in range(n)]
    return torch.tensor([d["h"] / d["w"] for d in draws])


def test_uniform_ratio_sampling_draws_ratios_uniformly_in_the_reference_range() -> None:
    lo, hi = 0.3, 1 / 0.3
    uniform, log_uniform = _ratios("uniform"), _ratios("log_uniform")
    assert uniform.min() >= 0.29 and uniform.max() <= 3.36  # rounding of h and w aside
    assert abs(uniform.mean().item() - (lo + hi) / 2) < 0.06  # ~1.82
    log_uniform_mean = (hi - lo) / math.log(hi / lo)  # ~1.26
    assert abs(log_uniform.mean().item() - log_uniform_mean) < 0.06
    # uniform: each quarter of the range holds about a quarter of the draws
    quarters = torch.histc(uniform, bins=4, min=0.3, max=1 / 0.3) / len(uniform)
    assert (quarters - 0.25).abs().max() < 0.04


@pytest.mark.parametrize("attempts", [1, 10, 100])
def test_erasing_makes_up_to_erase_attempts_attempts(
    monkeypatch: pytest.MonkeyPatch, attempts: int
) -> None:
    erase = RandomErasingDraws(p=1.0, ratio_sampling="uniform", attempts=attempts)
    calls: list[int] = []

    def never_fits() -> float:
        calls.append(1)
        return 1e6  # far too tall for the image

    monkeypatch.setattr(erase, "_draw_ratio", never_fits)
    params = erase.make_params([_image(0)])
    assert len(calls) == attempts and params["v"] is None  # every attempt failed: no erasing

    def fits_on_last_attempt() -> float:
        calls.append(1)
        return 1.0 if len(calls) == attempts else 1e6

    calls.clear()
    monkeypatch.setattr(erase, "_draw_ratio", fits_on_last_attempt)
    params = erase.make_params([_image(0)])
    assert len(calls) == attempts and params["v"] is not None


def test_per_axis_scale_jitter_truncates_each_side_with_int() -> None:
    # factor 1.19: 10 * 1.19 = 11.9 and 30 * 1.19 = 35.7; rounding would give (12, 36)
    per_axis = RandomScaleCenterCrop((10, 30), scale=(1.19, 1.19), per_axis=True)
    shared = RandomScaleCenterCrop((10, 30), scale=(1.19, 1.19))
    assert per_axis.make_params([])["resized"] == (11, 35)
    assert shared.make_params([])["resized"] == (12, 36)
    assert per_axis(_image(0)).shape == (3, 10, 30)


def test_per_axis_scale_jitter_draws_independent_height_and_width_factors() -> None:
    per_axis = RandomScaleCenterCrop((100, 100), scale=(1.0, 1.2), per_axis=True)
    shared = RandomScaleCenterCrop((100, 100), scale=(1.0, 1.2))
    torch.manual_seed(0)
    sizes = torch.tensor([per_axis.make_params([])["resized"] for _ in range(400)], dtype=float)
    assert sizes.min() >= 100 and sizes.max() <= 120
    assert (sizes[:, 0] != sizes[:, 1]).float().mean() > 0.9
    assert abs(torch.corrcoef(sizes.T)[0, 1].item()) < 0.15
    assert all(h == w for h, w in (shared.make_params([])["resized"] for _ in range(50)))


def test_reference_augmentation_still_shares_every_draw_within_a_pair() -> None:
    transform = build_train_transform(SIZE, erase_p=0.5, **REFERENCE)
    fill = torch.tensor(ERASE_MEAN)[:, None, None]
    torch.manual_seed(0)
    erased = 0
    for seed in range(30):
        img = _image(seed)
        clear, hazy = transform((img, img.clone()))
        assert torch.equal(clear, hazy)
        a, b = transform((img, _image(seed + 100)))
        mask_a, mask_b = (a == fill).all(0), (b == fill).all(0)
        assert torch.equal(mask_a, mask_b)
        erased += bool(mask_a.any())
    assert 5 < erased < 25


BAD_SETTINGS = [
    ("erase_fill", "grey", "data.erase_fill must be 'zero' or 'mean', not 'grey'"),
    ("erase_ratio_sampling", "normal", "data.erase_ratio_sampling must be 'log_uniform' or"),
    ("erase_attempts", 0, "data.erase_attempts must be a positive integer, not 0"),
    ("scale_jitter", "independent", "data.scale_jitter must be 'shared' or 'per_axis'"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_SETTINGS)
def test_invalid_augmentation_setting_is_refused_naming_the_setting(
    name: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_train_transform(SIZE, **{name: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        RVSLDataModule("unused", **{name: value})


def test_datamodule_passes_the_reference_augmentation_to_the_train_transform() -> None:
    dm = RVSLDataModule("unused", image_size=SIZE, **REFERENCE)
    steps = dm.train_transform.transforms
    crop = next(t for t in steps if isinstance(t, RandomScaleCenterCrop))
    erase = next(t for t in steps if isinstance(t, RandomErasingDraws))
    assert crop.per_axis and erase.ratio_sampling == "uniform" and erase.attempts == 100
    assert erase.value == pytest.approx(list(ERASE_MEAN))
    default = RVSLDataModule("unused", image_size=SIZE).train_transform.transforms
    assert not any(isinstance(t, RandomErasingDraws) for t in default)
