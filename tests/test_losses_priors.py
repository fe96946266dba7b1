"""Specification of the physical priors: DCP, TV, MIDC, airlight and the CR (haze-line) loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rvsl.losses import (
    colinear_relation_loss,
    dark_channel,
    dark_channel_loss,
    estimate_airlight,
    midc_loss,
    total_variation_loss,
)

# ---------------------------------------------------------------- slow references, written plainly


def slow_dark_channel(image: torch.Tensor, patch: int) -> torch.Tensor:
    """One (3, H, W) image, per-pixel loops; the window is clipped at the border."""
    _, h, w = image.shape
    lo, hi = (patch - 1) // 2, patch // 2
    rgb_min = image.min(dim=0).values
    out = torch.empty(h, w, dtype=image.dtype)
    for y in range(h):
        for x in range(w):
            window = rgb_min[max(y - lo, 0) : y + hi + 1, max(x - lo, 0) : x + hi + 1]
            out[y, x] = window.min()
    return out


def slow_airlight(image: torch.Tensor, fraction: float, erosion: int) -> torch.Tensor:
    """One (3, H, W) image: sort the eroded dark channel in python, average the top pixels."""
    _, h, w = image.shape
    dark = slow_dark_channel(image, erosion).flatten().tolist()
    k = max(int(h * w * fraction), 1)
    top = sorted(range(h * w), key=lambda p: dark[p], reverse=True)[:k]
    return image.reshape(3, h * w)[:, top].mean(dim=1)


def slow_reference_airlight(image: torch.Tensor, fraction: float, erosion: int) -> torch.Tensor:
    """The reference's loop: ascending sort, keep the last k, add all but the first, divide by k."""
    _, h, w = image.shape
    dark = slow_dark_channel(image, erosion).flatten().tolist()
    k = max(int(h * w * fraction), 1)
    chosen = sorted(range(h * w), key=lambda p: dark[p])[h * w - k :]
    return sum((image.reshape(3, h * w)[:, p] for p in chosen[1:]), torch.zeros(3)) / k


def slow_cr_loss(clear, hazy, fraction: float = 0.001, airlight=slow_airlight):
    """The reference's maths (chromaticity, F.normalize, MSE), one image at a time."""
    per_image = []
    for j, i in zip(clear, hazy, strict=True):
        a = airlight(i, fraction, 3)
        chroma = lambda v: v / v.sum(dim=0, keepdim=True).clamp(min=1e-6)  # noqa: E731
        a = chroma(a[:, None, None])
        hazy_dir = F.normalize(chroma(i) - a, dim=0)
        clear_dir = F.normalize(chroma(j) - a, dim=0)
        per_image.append(F.mse_loss(hazy_dir, clear_dir))
    return torch.stack(per_image).mean()


def ramp_hazy_batch(batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Hazy-looking images whose dark channel is a ramp over the raster index, flipped differently
    per image: the eroded dark channel then has distinct values at its bright end, so the top-k
    positions are unambiguous and any correct implementation must pick the same pixels."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.arange(h * w, dtype=torch.float32).reshape(h, w) / (h * w)
    images = []
    flips = [(), (0,), (1,), (0, 1)]
    for b in range(batch):
        dark = ramp.flip(dims=flips[b % 4]) if flips[b % 4] else ramp
        offsets = torch.rand(3, h, w, generator=g) * 0.3
        offsets = offsets - offsets.min(dim=0, keepdim=True).values  # one channel sits on the ramp
        images.append(0.7 * dark + offsets)
    return torch.stack(images)


# ---------------------------------------------------------------- dark channel


def test_dark_channel_of_a_haze_free_image_with_a_black_pixel_is_zero_near_it():
    image = torch.ones(1, 3, 9, 11)
    image[0, :, 4, 6] = 0.0
    dark = dark_channel(image, patch_size=3)[0, 0]
    expected = torch.ones(9, 11)
    expected[3:6, 5:8] = 0.0
    assert torch.equal(dark, expected)


def test_dark_channel_takes_the_minimum_over_colour_first():
    image = torch.ones(1, 3, 4, 4)
    image[0, 0] = 0.2  # a pure cyan-ish image: red is low everywhere
    assert torch.allclose(dark_channel(image, patch_size=1), torch.full((1, 1, 4, 4), 0.2))


def test_dark_channel_border_padding_never_lowers_the_minimum():
    image = torch.full((2, 3, 7, 5), 0.7)
    assert torch.allclose(dark_channel(image, patch_size=35), torch.full((2, 1, 7, 5), 0.7))


@pytest.mark.parametrize("patch", [1, 3, 4, 9])
def test_dark_channel_matches_a_per_pixel_reference(patch):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 7, 6)
    ours = dark_channel(images, patch_size=patch)
    for b in range(2):
        torch.testing.assert_close(ours[b, 0], slow_dark_channel(images[b], patch))


@pytest.mark.parametrize("patch", [1, 4, 35])
def test_dark_channel_keeps_the_size_of_non_square_images(patch):
    assert dark_channel(torch.rand(2, 3, 32, 16), patch_size=patch).shape == (2, 1, 32, 16)


def test_dark_channel_loss_pushes_toward_zero_by_default_and_toward_one_as_in_the_reference():
    image = torch.full((2, 3, 6, 5), 0.25)
    assert dark_channel_loss(image).item() == pytest.approx(0.25)
    assert dark_channel_loss(image, target="one").item() == pytest.approx(0.75)


def test_dark_channel_loss_with_target_one_equals_the_reference_formulation():
    torch.manual_seed(1)
    images = torch.rand(2, 3, 40, 24)
    pool = torch.nn.MaxPool3d((3, 35, 35), stride=1, padding=(0, 17, 17))
    reference = F.l1_loss(pool(1 - images[:, None]), torch.zeros(2, 1, 1, 40, 24))
    torch.testing.assert_close(dark_channel_loss(images, target="one"), reference)


def test_dark_channel_loss_rejects_an_unknown_target():
    with pytest.raises(ValueError, match="target"):
        dark_channel_loss(torch.rand(1, 3, 4, 4), target="half")  # type: ignore[arg-type]


# ---------------------------------------------------------------- total variation


def test_total_variation_of_a_constant_image_is_zero():
    assert total_variation_loss(torch.full((1, 3, 5, 4), 0.3)).item() == 0.0


def test_total_variation_of_a_horizontal_ramp_is_its_step():
    ramp = (0.1 * torch.arange(6.0)).expand(2, 3, 4, 6)  # +0.1 per column, rows identical
    assert total_variation_loss(ramp).item() == pytest.approx(0.1)


def test_total_variation_averages_each_direction_over_its_own_differences():
    image = torch.zeros(1, 1, 2, 3)
    image[0, 0, 0, 0] = 1.0  # two horizontal diffs of 4, one vertical diff of 3 are nonzero
    assert total_variation_loss(image).item() == pytest.approx(1 / 4 + 1 / 3)


def test_total_variation_matches_a_per_pixel_reference():
    torch.manual_seed(2)
    images = torch.rand(2, 3, 5, 7)
    horizontal, vertical = [], []
    for b in range(2):
        for c in range(3):
            for y in range(5):
                for x in range(7):
                    if x + 1 < 7:
                        horizontal.append(abs(images[b, c, y, x + 1] - images[b, c, y, x]))
                    if y + 1 < 5:
                        vertical.append(abs(images[b, c, y + 1, x] - images[b, c, y, x]))
    expected = sum(horizontal) / len(horizontal) + sum(vertical) / len(vertical)
    assert total_variation_loss(images).item() == pytest.approx(float(expected), rel=1e-5)


def test_total_variation_with_a_zero_padded_border_is_the_reference_convolution():
    image = torch.zeros(1, 1, 2, 3)
    image[0, 0, 0, 0] = 1.0  # per direction: |1 - 0| at the border, |0 - 1| inside, over 6 px
    assert total_variation_loss(image, border="zero_pad").item() == pytest.approx(2 / 6 + 2 / 6)
    torch.manual_seed(2)
    images = torch.rand(2, 3, 5, 7)
    kernel = torch.tensor([-1.0, 1.0, 0.0]).expand(3, 1, 3)  # one [-1, 1, 0] per channel
    hor = F.conv2d(images, kernel[..., None, :], padding=(0, 1), groups=3)
    ver = F.conv2d(images, kernel[..., :, None], padding=(1, 0), groups=3)
    expected = F.l1_loss(hor, torch.zeros_like(hor)) + F.l1_loss(ver, torch.zeros_like(ver))
    torch.testing.assert_close(total_variation_loss(images, border="zero_pad"), expected)
    with pytest.raises(ValueError, match="border"):
        total_variation_loss(images, border="reflect")  # type: ignore[arg-type]


def test_total_variation_of_a_single_column_image_is_finite():
    assert torch.isfinite(total_variation_loss(torch.rand(1, 3, 5, 1)))


# ---------------------------------------------------------------- MIDC


def test_midc_averages_the_violation_over_the_violating_pixels_only():
    clear = torch.full((1, 3, 4, 5), 0.5)
    hazy = torch.full((1, 3, 4, 5), 0.8)
    hazy[0, :, 1, 1] = 0.2  # violation of 0.3
    hazy[0, 1, 2, 3] = 0.4  # violation of 0.1 (green is the minimum there)
    assert midc_loss(clear, hazy, patch_size=1).item() == pytest.approx((0.3 + 0.1) / 2)


def test_midc_is_zero_with_finite_zero_gradients_when_haze_never_darkens():
    clear = torch.full((2, 3, 6, 4), 0.2, requires_grad=True)
    hazy = torch.full((2, 3, 6, 4), 0.6, requires_grad=True)
    loss = midc_loss(clear, hazy, patch_size=3)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(clear.grad, torch.zeros_like(clear))
    assert torch.equal(hazy.grad, torch.zeros_like(hazy))


@pytest.mark.parametrize("patch", [1, 3])
def test_midc_matches_a_per_pixel_reference_normalised_over_the_whole_batch(patch):
    torch.manual_seed(3)
    clear, hazy = torch.rand(3, 3, 6, 5), torch.rand(3, 3, 6, 5)
    total, count = 0.0, 0
    for b in range(3):
        dark_j, dark_i = slow_dark_channel(clear[b], patch), slow_dark_channel(hazy[b], patch)
        for y in range(6):
            for x in range(5):
                if dark_j[y, x] > dark_i[y, x]:
                    total += float(dark_j[y, x] - dark_i[y, x])
                    count += 1
    assert count > 0
    assert midc_loss(clear, hazy, patch_size=patch).item() == pytest.approx(total / count, rel=1e-5)


def test_midc_gradient_raises_the_hazy_dark_channel_and_lowers_the_clear_one():
    clear = torch.full((1, 3, 2, 2), 0.6, requires_grad=True)
    hazy = torch.full((1, 3, 2, 2), 0.3, requires_grad=True)
    midc_loss(clear, hazy, patch_size=1).backward()
    assert (hazy.grad.sum(dim=1) < 0).all() and (clear.grad.sum(dim=1) > 0).all()


# ---------------------------------------------------------------- airlight


def test_airlight_is_the_colour_of_the_most_haze_opaque_region():
    hazy = torch.full((1, 3, 40, 50), 0.1)
    hazy[0, :, 10:14, 20:24] = torch.tensor([0.9, 0.8, 0.7])[:, None, None]  # 2000 px -> k = 2
    torch.testing.assert_close(estimate_airlight(hazy), torch.tensor([[0.9, 0.8, 0.7]]))


def test_airlight_ignores_an_isolated_bright_pixel_thanks_to_the_erosion():
    hazy = torch.full((1, 3, 16, 16), 0.1)
    hazy[0, :, 2, 2] = 1.0  # a headlight
    hazy[0, :, 8:11, 8:11] = 0.6  # a 3x3 patch of sky
    torch.testing.assert_close(estimate_airlight(hazy), torch.tensor([[0.6, 0.6, 0.6]]))
    torch.testing.assert_close(estimate_airlight(hazy, erosion_size=1), torch.ones(1, 3))


def test_airlight_uses_at_least_one_pixel_on_small_images():
    hazy = torch.rand(2, 3, 32, 16)  # 512 px: 0.1% floors to 0
    assert estimate_airlight(hazy).shape == (2, 3)


@pytest.mark.parametrize("fraction", [0.001, 0.02, 0.1])
def test_airlight_matches_a_per_image_reference_on_random_images(fraction):
    torch.manual_seed(4)
    hazy = torch.rand(3, 3, 12, 10)  # continuous values: no ties without erosion
    ours = estimate_airlight(hazy, fraction=fraction, erosion_size=1)
    expected = torch.stack([slow_airlight(image, fraction, 1) for image in hazy])
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("fraction", [0.001, 0.01])
def test_airlight_with_erosion_matches_a_per_image_reference(fraction):
    hazy = ramp_hazy_batch(4, 24, 20, seed=5)
    ours = estimate_airlight(hazy, fraction=fraction)
    expected = torch.stack([slow_airlight(image, fraction, 3) for image in hazy])
    torch.testing.assert_close(ours, expected)


def test_reference_airlight_adds_the_k_minus_1_brightest_over_k_so_is_zero_below_2000_px():
    hazy = torch.full((1, 3, 40, 50), 0.1)
    hazy[0, :, 10:14, 20:24] = torch.tensor([0.9, 0.8, 0.7])[:, None, None]  # 2000 px -> k = 2
    expected = torch.tensor([[0.45, 0.4, 0.35]])  # the brightest pixel / 2
    torch.testing.assert_close(estimate_airlight(hazy, mode="reference"), expected)
    small = hazy[..., :49]  # 1960 px: k = 1, the reference's loop adds nothing
    assert torch.equal(estimate_airlight(small, mode="reference"), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="airlight"):
        estimate_airlight(hazy, mode="max")  # type: ignore[arg-type]


@pytest.mark.parametrize(("fraction", "erosion"), [(0.001, 3), (0.02, 3), (0.05, 1)])
def test_reference_airlight_matches_a_per_image_restatement(fraction, erosion):
    hazy = ramp_hazy_batch(4, 48, 50, seed=14)  # 2400 px: k = 2, 48, 120
    ours = estimate_airlight(hazy, fraction=fraction, erosion_size=erosion, mode="reference")
    expected = torch.stack([slow_reference_airlight(x, fraction, erosion) for x in hazy])
    torch.testing.assert_close(ours, expected)


def test_airlight_gradient_reaches_only_the_chosen_pixels():
    hazy = torch.full((1, 3, 16, 16), 0.1)
    hazy[0, :, 8:11, 8:11] = 0.6
    hazy.requires_grad_(True)
    estimate_airlight(hazy).sum().backward()
    assert hazy.grad[0, :, 9, 9].tolist() == pytest.approx([1.0] * 3)  # the one eroded maximum
    assert hazy.grad.abs().sum().item() == pytest.approx(3.0)


# ---------------------------------------------------------------- colinear relation (haze lines)


def test_cr_loss_is_zero_when_every_hazy_pixel_lies_on_its_haze_line():
    torch.manual_seed(6)
    airlight = torch.tensor([0.9, 0.85, 0.8])[:, None, None]
    clear = torch.rand(2, 3, 32, 16) * 0.5
    t = torch.rand(2, 1, 32, 16) * 0.7 + 0.2
    hazy = clear * t + airlight * (1 - t)  # atmospheric scattering model
    clear[:, :, 4:8, 4:8] = hazy[:, :, 4:8, 4:8] = airlight  # sky: the brightest dark channel
    assert colinear_relation_loss(clear, hazy).item() == pytest.approx(0.0, abs=1e-8)


def test_cr_loss_is_positive_when_the_clear_colours_leave_the_haze_line():
    torch.manual_seed(7)
    clear = torch.rand(2, 3, 16, 16)
    hazy = 0.5 * clear + 0.4
    off_line = clear[:, [2, 0, 1]]
    assert colinear_relation_loss(off_line, hazy) > colinear_relation_loss(clear, hazy) + 1e-3


def test_cr_loss_matches_a_per_image_reference():
    torch.manual_seed(8)
    hazy = ramp_hazy_batch(4, 24, 20, seed=9)
    clear = torch.rand(4, 3, 24, 20)
    torch.testing.assert_close(colinear_relation_loss(clear, hazy), slow_cr_loss(clear, hazy))


@pytest.mark.parametrize("size", [(48, 50), (24, 20)])  # k = 2; k = 1 (A = 0)
def test_cr_loss_with_the_reference_airlight_matches_a_per_image_reference(size):
    hazy = ramp_hazy_batch(3, *size, seed=16)
    clear = hazy.flip(dims=(0,))[:, [2, 0, 1]]  # other images' colours, off the haze lines
    expected = slow_cr_loss(clear, hazy, airlight=slow_reference_airlight)
    torch.testing.assert_close(colinear_relation_loss(clear, hazy, airlight="reference"), expected)


def test_cr_loss_of_a_batch_is_the_mean_of_its_images():
    torch.manual_seed(10)
    clear, hazy = torch.rand(3, 3, 32, 16), torch.rand(3, 3, 32, 16)
    singles = torch.stack(
        [colinear_relation_loss(clear[b : b + 1], hazy[b : b + 1]) for b in range(3)]
    )
    torch.testing.assert_close(colinear_relation_loss(clear, hazy), singles.mean())


@pytest.mark.parametrize("kind", ["random", "grey"])
def test_cr_loss_of_identical_images_is_zero_with_finite_gradients(kind):
    torch.manual_seed(11)
    image = torch.rand(2, 3, 12, 8) if kind == "random" else torch.full((2, 3, 12, 8), 0.5)
    clear, hazy = image.clone().requires_grad_(True), image.clone().requires_grad_(True)
    loss = colinear_relation_loss(clear, hazy)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(clear.grad).all() and torch.isfinite(hazy.grad).all()


def test_cr_loss_gives_no_gradient_spike_where_a_pixel_matches_the_airlight_colour():
    # grey hazy image: every hazy chromaticity equals the airlight's, its direction is undefined
    hazy = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)
    clear = torch.rand(1, 3, 8, 8, requires_grad=True)
    colinear_relation_loss(clear, hazy).backward()
    assert hazy.grad.abs().max() < 1.0 and clear.grad.abs().max() < 1.0


# ---------------------------------------------------------------- precision and gradients


PRIORS = {
    "dcp": lambda j, i: dark_channel_loss(j),
    "dcp-one": lambda j, i: dark_channel_loss(j, target="one"),
    "tv": lambda j, i: total_variation_loss(j),
    "tv-zero-pad": lambda j, i: total_variation_loss(j, border="zero_pad"),
    "midc": lambda j, i: midc_loss(j, i),
    "cr": lambda j, i: colinear_relation_loss(j, i),
    "cr-reference": lambda j, i: colinear_relation_loss(j, i, airlight="reference"),
}


@pytest.mark.parametrize("name", list(PRIORS))
def test_priors_on_non_square_images_give_finite_scalar_gradients(name):
    torch.manual_seed(12)
    clear = torch.rand(2, 3, 32, 16, requires_grad=True)
    hazy = torch.rand(2, 3, 32, 16, requires_grad=True)
    loss = PRIORS[name](clear, hazy)
    loss.backward()
    assert loss.shape == () and torch.isfinite(loss)
    assert torch.isfinite(clear.grad).all()
    assert hazy.grad is None or torch.isfinite(hazy.grad).all()


@pytest.mark.parametrize("name", list(PRIORS))
def test_priors_reduce_half_precision_images_in_float32(name):
    torch.manual_seed(13)
    clear, hazy = torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 16)
    expected = PRIORS[name](clear, hazy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = PRIORS[name](clear.to(torch.bfloat16), hazy.to(torch.bfloat16))
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=0.02, rtol=0.05)
