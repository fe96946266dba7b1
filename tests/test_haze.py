"""Haze synthesis: the atmospheric scattering model, the synthesizer, depth priors and maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvsl.data import haze
from rvsl.data.haze import HazeError, HazeSynthesizer


def _images(n: int = 4, h: int = 12, w: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.uniform(0, 1, (n, h, w, 3)).astype(np.float32),
        rng.uniform(0, 1, (n, h, w)).astype(np.float32),
    )


def test_transmission_is_exp_of_minus_beta_depth_in_zero_one() -> None:
    _, depth = _images()
    t = haze.transmission(depth, 2.5)
    np.testing.assert_allclose(t, np.exp(-2.5 * depth), rtol=1e-6)
    assert np.all((t > 0) & (t <= 1))
    assert np.all(haze.transmission(np.zeros((3, 3)), 5.0) == 1.0)


def test_zero_beta_leaves_the_image_unchanged() -> None:
    clear, depth = _images()
    np.testing.assert_allclose(haze.add_haze(clear, depth, 0.0, 0.8), clear, atol=1e-7)


def test_zero_depth_leaves_the_image_unchanged() -> None:
    clear, depth = _images()
    np.testing.assert_allclose(haze.add_haze(clear, depth * 0, 4.0, 0.8), clear, atol=1e-7)


def test_large_beta_depth_gives_the_airlight() -> None:
    clear, depth = _images()
    far = np.ones_like(depth)
    np.testing.assert_allclose(haze.add_haze(clear, far, 200.0, 0.7), 0.7, atol=1e-6)
    rgb = np.array([0.6, 0.7, 0.9], np.float32)
    np.testing.assert_allclose(
        haze.add_haze(clear[0], far[0], 200.0, rgb), np.broadcast_to(rgb, clear[0].shape), atol=1e-6
    )


def test_scatter_is_exactly_j_t_plus_a_one_minus_t() -> None:
    clear, depth = _images(n=1)
    beta, a = 3.0, 0.55
    t = np.exp(-beta * depth[0])
    expected = clear[0] * t[..., None] + a * (1 - t[..., None])
    np.testing.assert_allclose(haze.add_haze(clear[0], depth[0], beta, a), expected, rtol=1e-6)


def test_batched_haze_equals_haze_per_image() -> None:
    clear, depth = _images(n=5)
    beta = np.linspace(1, 5, 5, dtype=np.float32)
    gray = np.linspace(0.4, 1.0, 5, dtype=np.float32)
    rgb = np.random.default_rng(1).uniform(0.4, 1.0, (5, 3)).astype(np.float32)
    batched_gray = haze.add_haze(clear, depth, beta, gray)
    batched_rgb = haze.add_haze(clear, depth, beta, rgb)
    for i in range(5):
        np.testing.assert_allclose(
            batched_gray[i], haze.add_haze(clear[i], depth[i], beta[i], gray[i]), rtol=1e-6
        )
        np.testing.assert_allclose(
            batched_rgb[i], haze.add_haze(clear[i], depth[i], beta[i], rgb[i]), rtol=1e-6
        )


def test_density_map_makes_non_homogeneous_haze() -> None:
    clear, depth = _images(n=1)
    beta_map = np.where(np.arange(10) < 5, 0.0, 50.0)[None, :] * np.ones((12, 1))
    out = haze.add_haze(clear[0], np.ones_like(depth[0]), beta_map, 0.9)
    np.testing.assert_allclose(out[:, :5], clear[0][:, :5], atol=1e-6)
    np.testing.assert_allclose(out[:, 5:], 0.9, atol=1e-6)


def test_per_image_beta_must_match_the_batch() -> None:
    _, depth = _images(n=3)
    with pytest.raises(ValueError, match="2 values for a batch of 3"):
        haze.transmission(depth, np.array([1.0, 2.0]))


def test_synthesizer_draws_fvrid_ranges_per_image_from_the_seed() -> None:
    clear, depth = _images(n=64)
    synth = HazeSynthesizer()
    hazy, beta, airlight = synth(clear, depth, np.random.default_rng(3))
    assert beta.shape == airlight.shape == (64,)
    assert np.all((beta >= 1) & (beta <= 5)) and np.all((airlight >= 0.4) & (airlight <= 1.0))
    assert beta.std() > 0.5  # drawn per image, not once
    again, beta2, airlight2 = synth(clear, depth, np.random.default_rng(3))
    np.testing.assert_array_equal(airlight, airlight2)
    np.testing.assert_array_equal(hazy, again)
    np.testing.assert_array_equal(beta, beta2)
    np.testing.assert_allclose(hazy, np.clip(haze.add_haze(clear, depth, beta, airlight), 0, 1))


def test_synthesizer_on_one_image_returns_scalars() -> None:
    clear, depth = _images(n=1)
    hazy, beta, airlight = HazeSynthesizer()(clear[0], depth[0], np.random.default_rng(0))
    assert hazy.shape == clear[0].shape and np.ndim(beta) == 0 and np.ndim(airlight) == 0


@pytest.mark.parametrize(
    ("beta", "airlight"), [((5, 1), (0.4, 1)), ((-1, 2), (0.4, 1)), ((1, 5), (0.5, 1.2))]
)
def test_synthesizer_rejects_bad_ranges(beta, airlight) -> None:
    with pytest.raises(HazeError, match="LO HI"):
        HazeSynthesizer(beta=beta, airlight=airlight)


def test_haze_lowers_contrast() -> None:
    clear, depth = _images(n=8)
    hazy, _, _ = HazeSynthesizer()(clear, depth, np.random.default_rng(0))
    assert np.all(hazy.std(axis=(1, 2, 3)) < clear.std(axis=(1, 2, 3)))


def test_ground_plane_prior_grows_from_bottom_to_top() -> None:
    depth = haze.ground_plane_depth(20, 7, near=0.2, far=0.8)
    assert depth.shape == (20, 7)
    assert depth[0, 0] == pytest.approx(0.8) and depth[-1, 0] == pytest.approx(0.2)
    assert np.all(np.diff(depth[:, 0]) < 0)
    assert np.all(depth == depth[:, :1])  # constant along rows
    with pytest.raises(HazeError, match="near <= far"):
        haze.ground_plane_depth(4, 4, near=0.9, far=0.1)


def test_ground_plus_dark_prior_blends_in_range_and_sees_bright_flat_regions_as_far() -> None:
    img = np.zeros((32, 32, 3), np.float32)
    img[:, 16:] = 0.95  # a bright colourless right half (sky-like)
    depth = haze.prior_depth(img, "ground+dark")
    assert depth.min() >= 0.2 - 1e-6 and depth.max() <= 0.8 + 1e-6
    assert depth[:, 24:].mean() > depth[:, :8].mean()
    np.testing.assert_array_equal(haze.prior_depth(img, "ground"), haze.ground_plane_depth(32, 32))
    with pytest.raises(HazeError, match="unknown depth prior"):
        haze.prior_depth(img, "midas")


def test_dark_channel_is_min_over_channels_and_patch() -> None:
    img = np.ones((9, 9, 3), np.float32)
    img[4, 4, 1] = 0.0
    dark = haze.dark_channel(img, 3)
    assert dark[3:6, 3:6].max() == 0.0 and dark[0, 0] == 1.0


def test_gaussian_blur_keeps_constants_and_mass() -> None:
    const = np.full((10, 12, 3), 0.3, np.float32)
    np.testing.assert_allclose(haze.gaussian_blur(const, 1.2), const, atol=1e-6)
    spike = np.zeros((21, 21), np.float32)
    spike[10, 10] = 1.0
    blurred = haze.gaussian_blur(spike, 1.0, channels_last=False)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5) and blurred.max() < 0.2
    np.testing.assert_array_equal(haze.gaussian_blur(const, 0.0), const)


def test_smooth_field_is_seeded_bounded_and_smooth() -> None:
    a = haze.smooth_field(np.random.default_rng(5), 40, 30)
    b = haze.smooth_field(np.random.default_rng(5), 40, 30)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (40, 30) and a.min() >= -1 and a.max() <= 1
    assert np.abs(np.diff(a, axis=0)).max() < 0.3


def test_load_depth_normalises_8_and_16_bit_png_and_npy(tmp_path: Path) -> None:
    ramp8 = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (8, 1))
    Image.fromarray(ramp8).save(tmp_path / "a.png")
    ramp16 = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (8, 1))
    Image.fromarray(ramp16).save(tmp_path / "b.png")
    np.save(tmp_path / "c.npy", np.tile(np.linspace(2.0, 50.0, 16), (8, 1)))  # metres
    for name in ("a.png", "b.png", "c.npy"):
        depth = haze.load_depth(tmp_path / name)
        assert depth.dtype == np.float32 and depth.shape == (8, 16)
        assert depth.min() == pytest.approx(0.0, abs=1e-6)
        assert depth.max() == pytest.approx(1.0, abs=1e-6)
    assert haze.load_depth(tmp_path / "a.png", size=(4, 8)).shape == (4, 8)  # same aspect


def test_load_depth_names_an_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(HazeError, match=r"bad\.png"):
        haze.load_depth(tmp_path / "bad.png")
