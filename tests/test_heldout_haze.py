"""The held-out haze: deterministic, different in kind from the "real" haze, as strong, and
written by the world generator beside the real test images with their scenes and depths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvsl.data import demo_world as dw
from rvsl.data.check import (
    DatasetError,
    check_dataset,
    evaluation_folders,
    require_valid_dataset,
)
from rvsl.data.demo_world.heldout import depth_png
from rvsl.data.haze import load_depth

SIZE = (32, 32)
SMALL = 0.05  # 2 real test identities
#: How far apart the two hazes' strengths may drift (measured: within about 10%).
STRENGTH_BAND = (2 / 3, 3 / 2)
HAZES = {"real": dw.real_haze, "heldout": dw.heldout_haze}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("heldout") / "world"
    dw.build_demo_world(root, seed=0, size=SIZE, scale=SMALL, workers=1)
    return root


def flat(value: float, shape: tuple[int, int] = SIZE) -> np.ndarray:
    return np.full((*shape, 3), value, np.float32)


def const_depth(value: float, shape: tuple[int, int] = SIZE) -> np.ndarray:
    return np.full(shape, value, np.float32)


def effective_transmission(haze, depth: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """How much of a change in the scene survives the haze, per pixel and channel (the same
    draw on two flat scenes), and where neither output is clipped."""
    dark = haze(flat(0.0, depth.shape), depth, np.random.default_rng(seed))
    light = haze(flat(0.3, depth.shape), depth, np.random.default_rng(seed))
    return (light - dark) / 0.3, light < 0.999


def real_renders(n: int, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    cameras = dw.make_cameras(0, real=True)
    return [
        dw.render_view(
            dw.sample_vehicle(np.random.default_rng(i)),
            cameras[i % len(cameras)],
            np.random.default_rng(100 + i),
            size,
        )
        for i in range(n)
    ]


def edge_contrast(image: np.ndarray) -> float:
    return float(np.abs(np.diff(image, axis=0)).mean() + np.abs(np.diff(image, axis=1)).mean())


# ----------------------------------------------------------------------------- the haze


def test_heldout_haze_is_deterministic_given_the_rng() -> None:
    scene, depth = real_renders(1, SIZE)[0]
    a = dw.heldout_haze(scene, depth, np.random.default_rng(5))
    b = dw.heldout_haze(scene, depth, np.random.default_rng(5))
    c = dw.heldout_haze(scene, depth, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == scene.shape and a.dtype == np.float32 and 0 <= a.min() <= a.max() <= 1


@pytest.mark.parametrize("seed", range(5))
def test_heldout_scatters_blue_more_than_red_while_real_haze_is_grey(seed: int) -> None:
    t, ok = effective_transmission(dw.heldout_haze, const_depth(0.4), seed)
    red, green, blue = (t[..., c][ok.all(-1)] for c in range(3))
    assert np.all(red > green) and np.all(green > blue)
    t, _ = effective_transmission(dw.real_haze, const_depth(0.4), seed)
    np.testing.assert_allclose(t[..., 0], t[..., 2], atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_heldout_veil_changes_hue_with_depth_real_veil_keeps_its_tint(seed: int) -> None:
    """Over a black scene, the veil's blue share falls with depth for the held-out haze
    (Angstrom extinction, neutral airlight); the real veil has its airlight's tint throughout."""

    def blue_share(haze, depth: float) -> float:
        black = flat(0.0)
        glare = haze(black, const_depth(0.0), np.random.default_rng(seed))
        hazy = haze(black, const_depth(depth), np.random.default_rng(seed))
        veil = (hazy - glare)[(hazy < 0.999).all(-1)]
        return float(veil[:, 2].mean() / veil.mean())

    assert blue_share(dw.heldout_haze, 0.05) > blue_share(dw.heldout_haze, 0.9) + 0.05
    assert blue_share(dw.real_haze, 0.05) == pytest.approx(blue_share(dw.real_haze, 0.9), abs=1e-3)


def test_heldout_fog_lies_on_the_ground_real_haze_has_no_vertical_order() -> None:
    """At one depth, held-out transmission rises row by row from bottom to top and is the same
    along each row; the real haze's random density field gives neither."""
    monotone = {"real": 0, "heldout": 0}
    for seed in range(20):
        for name, haze in HAZES.items():
            t, ok = effective_transmission(haze, const_depth(0.5), seed)
            rows = t.mean(axis=(1, 2))
            monotone[name] += bool(np.all(np.diff(rows) < 0))
            if name == "heldout":
                assert ok.all() and t.mean(-1).std(axis=1).max() < 1e-5
            else:
                assert t.mean(-1).std(axis=1).mean() > 1e-3
    assert monotone["heldout"] == 20 and monotone["real"] < 10


@pytest.mark.parametrize("seed", range(5))
def test_heldout_glare_is_a_neutral_off_centre_halo_in_the_upper_half(seed: int) -> None:
    glare = dw.heldout_haze(
        flat(0.0, (40, 40)), const_depth(0.0, (40, 40)), np.random.default_rng(seed)
    )
    np.testing.assert_array_equal(glare[..., 0], glare[..., 2])
    row, col = np.unravel_index(np.argmax(glare[..., 0]), (40, 40))
    assert row <= 20 and abs(col + 0.5 - 20) >= 0.25 * 40
    assert 0.01 < glare.max() <= 0.15


def test_heldout_and_real_haze_are_about_as_strong_on_the_same_renders() -> None:
    """Mean effective transmission and kept edge contrast over the same real-camera renders:
    within STRENGTH_BAND of each other (measured about 1.02 and 1.05 on 200 renders of 64x64)."""
    renders = real_renders(40, (48, 48))
    means = {}
    for name, haze in HAZES.items():
        t = [effective_transmission(haze, d, i)[0].mean() for i, (_, d) in enumerate(renders)]
        kept = [
            edge_contrast(haze(s, d, np.random.default_rng(i))) / edge_contrast(s)
            for i, (s, d) in enumerate(renders)
        ]
        means[name] = (np.mean(t), np.mean(kept))
    for k in range(2):
        ratio = means["heldout"][k] / means["real"][k]
        assert STRENGTH_BAND[0] < ratio < STRENGTH_BAND[1], (k, means)
    assert 0.3 < means["heldout"][0] < 0.75  # a real haze, neither faint nor opaque


# ----------------------------------------------------------------------------- depth maps


def test_depth_png_round_trips_within_the_quantisation_step(tmp_path: Path) -> None:
    depth = np.random.default_rng(0).uniform(0, 1, SIZE).astype(np.float32)
    depth[0, :3] = [0.0, 1.0, 0.5]
    path = tmp_path / "d.png"
    path.write_bytes(depth_png(depth))
    with Image.open(path) as img:
        assert img.mode == "I;16"
    step = 1.0 / dw.DEPTH_UNITS_PER_METRE
    metres = dw.read_depth_metres(path)
    assert np.abs(metres - depth * dw.FAR).max() <= step / 2 + 1e-4
    assert np.abs(load_depth(path) - depth).max() <= 0.5 / 65535 + 1e-6  # rvsl-data fog's reader


# ----------------------------------------------------------------------------- the world


def test_world_writes_the_heldout_set_under_the_real_test_file_names(world: Path) -> None:
    for split in ("query", "gallery"):
        real = sorted(p.name for p in (world / f"FVRID_real/{split}_foggy").iterdir())
        assert real and real == sorted(
            p.name for p in (world / f"FVRID_heldout/{split}_foggy").iterdir()
        )
        stems = sorted(Path(n).stem for n in real)
        for kind in ("scene", "depth"):
            files = sorted((world / f"FVRID_heldout/{split}_{kind}").iterdir())
            assert [p.stem for p in files] == stems and {p.suffix for p in files} == {".png"}
        name = real[0]
        held, fog = (world / f"FVRID_{top}/{split}_foggy/{name}" for top in ("heldout", "real"))
        assert held.read_bytes()[:2] == b"\xff\xd8" and held.read_bytes() != fog.read_bytes()
    assert sorted(p.name for p in (world / "FVRID_heldout").iterdir()) == sorted(
        Path(f).name for f in dw.HELDOUT_FOLDERS
    )  # no training images


def test_scene_and_depth_files_are_the_clean_render(world: Path) -> None:
    name = sorted((world / "FVRID_heldout/gallery_scene").iterdir())[0].name
    with Image.open(world / "FVRID_heldout/gallery_scene" / name) as img:
        assert img.mode == "RGB" and img.size == (SIZE[1], SIZE[0])
    metres = dw.read_depth_metres(world / "FVRID_heldout/gallery_depth" / name)
    assert metres.shape == SIZE and 0 < metres.min() < metres.max() <= dw.FAR
    assert metres[12:20, 12:20].mean() < metres[:3].mean()  # the vehicle before its backdrop


def test_world_json_records_the_heldout_folders_and_depth_scale(world: Path) -> None:
    manifest = json.loads((world / dw.MANIFEST_NAME).read_text())
    assert manifest["version"] == dw.GENERATOR_VERSION >= 3
    for folder in dw.HELDOUT_FOLDERS:
        assert manifest["splits"][folder]["images"] == len(list((world / folder).iterdir()))
        assert manifest["splits"][folder]["identities"] == dw.group_sizes(SMALL)["real_test"]
    assert manifest["heldout_depth"]["units_per_metre"] == pytest.approx(65535 / dw.FAR)
    assert any(k.startswith("FVRID_heldout/query_depth/") for k in manifest["files"])
    assert dw.foreign_files(world) == []


# ----------------------------------------------------------------------------- optional


def test_the_check_covers_the_heldout_set_when_present_and_only_then(
    world: Path, tmp_path: Path
) -> None:
    report = check_dataset(world, fast=True)
    assert report.ok, report.problems
    checked = [s.folder for s in report.splits]
    assert checked[-2:] == ["FVRID_heldout/query_foggy", "FVRID_heldout/gallery_foggy"]
    assert evaluation_folders(["REAL_HELDOUT"]) == checked[-2:]
    fvrid_like = tmp_path / "fvrid"
    shutil.copytree(world, fvrid_like, ignore=shutil.ignore_patterns("FVRID_heldout"))
    report = check_dataset(fvrid_like, fast=True)
    assert report.ok and not any("heldout" in s.folder for s in report.splits)
    with pytest.raises(DatasetError, match="FVRID_heldout/query_foggy: missing folder"):
        require_valid_dataset(fvrid_like, folders=evaluation_folders(["REAL_HELDOUT"]))
