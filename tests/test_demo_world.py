"""The embedded demo world: FVRID layout, protocol-ready splits, determinism, caching, haze."""

from __future__ import annotations

import colorsys
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvsl.data import demo_world as dw
from rvsl.data import fvrid
from rvsl.data.check import check_dataset

SIZE = (32, 32)
SCALE = 0.1  # 12 + 4 + 8 + 8 + 4 identities
SMALL = 0.05  # 6 + 2 + 4 + 4 + 2 identities
TINY = 0.01  # 2 identities per group, for builds whose content does not matter


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "world"
    dw.build_demo_world(root, seed=0, size=SIZE, scale=SCALE, workers=1)
    return root


def folder_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def pids(folder: Path) -> set[int]:
    return {r.pid for r in fvrid.list_images(folder)}


def test_world_has_the_fvrid_layout_and_a_manifest(world: Path) -> None:
    for folder in dw.WORLD_FOLDERS:
        assert (world / folder).is_dir(), folder
        assert any((world / folder).iterdir()), folder
    manifest = json.loads((world / dw.MANIFEST_NAME).read_text())
    assert manifest["version"] == dw.GENERATOR_VERSION
    assert manifest["seed"] == 0 and manifest["size"] == list(SIZE) and manifest["scale"] == SCALE
    for folder, row in manifest["splits"].items():
        assert row["images"] == len(list((world / folder).iterdir()))


def test_file_names_are_padded_pid_and_one_based_camera(world: Path) -> None:
    names = [p.name for p in (world / "FVRID_syn/train_clear").iterdir()]
    assert all(len(n.split("_")[0]) == 4 and n.split("_")[1][0] == "c" for n in names)
    cams = {fvrid.parse_name(n)[1] for n in names}
    assert cams == set(range(dw.NUM_CAMERAS))


def test_world_parses_with_the_fvrid_loaders(world: Path) -> None:
    for split in ("train", "query", "gallery"):
        pairs = fvrid.list_pairs(
            world / f"FVRID_syn/{split}_clear", world / f"FVRID_syn/{split}_foggy"
        )
        assert pairs
    for name in ("SYN", "REAL_CLEAR", "REAL_FOGGY"):
        query, gallery = fvrid.load_test_set(world, name)
        assert query and gallery
    assert len({r.pid for r in fvrid.syn_train_pairs(world)}) == 12
    assert fvrid.real_train_images(world, 2) and fvrid.real_train_images(world, 3)


def test_world_passes_the_dataset_check(world: Path) -> None:
    report = check_dataset(world)
    assert report.ok, report.problems
    assert not report.warnings


@pytest.mark.parametrize("test_set", ["SYN", "REAL_CLEAR", "REAL_FOGGY"])
def test_every_query_has_a_gallery_match_from_another_camera(world: Path, test_set: str) -> None:
    query, gallery = fvrid.load_test_set(world, test_set)
    for q in query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in gallery), q.path.name
    assert {q.camid for q in query} != {0}  # query cameras vary between identities


def test_queries_of_an_identity_come_from_one_camera(world: Path) -> None:
    query, _ = fvrid.load_test_set(world, "REAL_FOGGY")
    by_pid: dict[int, set[int]] = {}
    for q in query:
        by_pid.setdefault(q.pid, set()).add(q.camid)
    assert all(len(cams) == 1 for cams in by_pid.values())


def test_identity_groups_are_disjoint(world: Path) -> None:
    syn_train = pids(world / "FVRID_syn/train_clear")
    syn_test = pids(world / "FVRID_syn/query_clear") | pids(world / "FVRID_syn/gallery_clear")
    real_clear = pids(world / "FVRID_clear/train_clear")
    real_hazy = pids(world / "FVRID_real/train_foggy")
    real_test = pids(world / "FVRID_real/gallery_foggy")
    groups = [syn_train, syn_test, real_clear, real_hazy, real_test]
    assert [len(g) for g in groups] == [12, 4, 8, 8, 4]
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            assert not a & b
    assert not (syn_train | syn_test) & (real_clear | real_hazy | real_test)


def test_real_clear_and_real_foggy_test_sets_show_the_same_identities(world: Path) -> None:
    for split in ("query", "gallery"):
        clear = sorted(p.name for p in (world / f"FVRID_clear/{split}_clear").iterdir())
        foggy = sorted(p.name for p in (world / f"FVRID_real/{split}_foggy").iterdir())
        assert clear == foggy


def test_real_images_are_jpeg_and_synthetic_ones_png(world: Path) -> None:
    real = next((world / "FVRID_real/train_foggy").iterdir())
    syn = next((world / "FVRID_syn/train_foggy").iterdir())
    assert real.suffix == ".jpg" and real.read_bytes()[:2] == b"\xff\xd8"
    assert syn.suffix == ".png"
    with Image.open(real) as img:
        assert img.size == (SIZE[1], SIZE[0]) and img.mode == "RGB"


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def test_haze_lowers_contrast_of_synthetic_twins(world: Path) -> None:
    drops = []
    for clear in sorted((world / "FVRID_syn/train_clear").iterdir())[:40]:
        hazy = world / "FVRID_syn/train_foggy" / clear.name
        drops.append(_load(clear).std() - _load(hazy).std())
    assert np.mean(drops) > 0.02 and np.mean(np.array(drops) > 0) > 0.9


def test_real_haze_is_brighter_and_flatter_than_real_clear(world: Path) -> None:
    clear = np.stack([_load(p) for p in sorted((world / "FVRID_clear/gallery_clear").iterdir())])
    foggy = np.stack([_load(p) for p in sorted((world / "FVRID_real/gallery_foggy").iterdir())])
    assert foggy.mean() > clear.mean() + 0.05
    assert foggy.std(axis=(1, 2, 3)).mean() < clear.std(axis=(1, 2, 3)).mean()


def test_render_depth_puts_the_vehicle_before_its_background() -> None:
    vehicle = dw.sample_vehicle(np.random.default_rng(4))
    cam = dw.make_cameras(0, real=False)[0]
    scene, depth = dw.render_view(vehicle, cam, np.random.default_rng(1), (48, 48))
    assert scene.shape == (48, 48, 3) and depth.shape == (48, 48)
    assert scene.min() >= 0 and scene.max() <= 1 and depth.min() >= 0 and depth.max() <= 1
    centre, corners = depth[20:28, 20:28].mean(), depth[:4, [0, 1, -2, -1]].mean()
    assert centre < 0.4 and corners > centre + 0.1
    again = dw.render_view(vehicle, cam, np.random.default_rng(1), (48, 48))
    np.testing.assert_array_equal(scene, again[0])


def test_synthetic_twin_is_the_scattering_model_on_the_exact_depth() -> None:
    vehicle = dw.sample_vehicle(np.random.default_rng(2))
    cam = dw.make_cameras(0, real=False)[1]
    scene, depth = dw.render_view(vehicle, cam, np.random.default_rng(0), (32, 32))
    hazy, beta, airlight = dw.HazeSynthesizer()(scene, depth, np.random.default_rng(9))
    t = np.exp(-beta * depth)[..., None]
    np.testing.assert_allclose(hazy, np.clip(scene * t + airlight * (1 - t), 0, 1), atol=1e-6)


def test_real_haze_is_non_homogeneous_and_tinted() -> None:
    flat = np.full((32, 32, 3), 0.2, np.float32)
    hazy = dw.real_haze(flat, np.full((32, 32), 0.5, np.float32), np.random.default_rng(0))
    assert hazy[..., 0].std() > 0.005  # density varies over the image
    channel_means = hazy.mean(axis=(0, 1))
    assert channel_means.max() - channel_means.min() > 0.01  # coloured airlight


def test_vehicles_vary_in_type_colour_and_details() -> None:
    vehicles = [dw.sample_vehicle(np.random.default_rng(i)) for i in range(400)]
    assert {v.body for v in vehicles} == set(dw.BODY_TYPES)
    assert len({v.color_name for v in vehicles}) >= 8
    assert len({v.plate_code for v in vehicles}) > 25
    same = [v for v in vehicles if v.body == "sedan" and v.color_name == "white"]
    assert len(same) >= 3  # confusable identities exist...
    assert len({(tuple(v.color.round(3)), v.plate_code) for v in same}) == len(
        same
    )  # ...yet differ


def test_custom_paints_spread_over_every_hue_so_colour_is_a_fine_grained_cue() -> None:
    vehicles = [dw.sample_vehicle(np.random.default_rng(i)) for i in range(400)]
    custom = [v for v in vehicles if v.color_name == "custom"]
    assert 0.5 < len(custom) / len(vehicles) < 0.7
    hues = [colorsys.rgb_to_hsv(*v.color)[0] for v in custom]
    assert np.histogram(hues, bins=6, range=(0, 1))[0].min() > len(custom) / 6 / 2  # no hue missing


def test_same_seed_gives_identical_bytes_for_any_worker_count(tmp_path: Path) -> None:
    a = dw.build_demo_world(tmp_path / "a", seed=3, size=SIZE, scale=SMALL, workers=1)
    b = dw.build_demo_world(tmp_path / "b", seed=3, size=SIZE, scale=SMALL, workers=2)
    assert not a.reused and not b.reused
    assert folder_hash(tmp_path / "a") == folder_hash(tmp_path / "b")


def test_different_seed_gives_a_different_world(tmp_path: Path) -> None:
    dw.build_demo_world(tmp_path / "a", seed=0, size=SIZE, scale=TINY, workers=1)
    dw.build_demo_world(tmp_path / "b", seed=1, size=SIZE, scale=TINY, workers=1)
    assert folder_hash(tmp_path / "a") != folder_hash(tmp_path / "b")
    for folder in dw.GENERATED_FOLDERS:
        a = {p.name: p.read_bytes() for p in (tmp_path / "a" / folder).iterdir()}
        b = {p.name: p.read_bytes() for p in (tmp_path / "b" / folder).iterdir()}
        assert not any(a[n] == b[n] for n in set(a) & set(b)), folder


def test_cached_world_is_reused_without_rewriting(tmp_path: Path) -> None:
    root = tmp_path / "w"
    dw.build_demo_world(root, seed=0, size=SIZE, scale=TINY, workers=1)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    calls = []
    again = dw.build_demo_world(
        root, seed=0, size=SIZE, scale=TINY, workers=1, progress=lambda *a: calls.append(a)
    )
    assert again.reused and not calls
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    assert again.images == sum(1 for p in root.rglob("*.*") if p.name != dw.MANIFEST_NAME)


def test_world_is_rebuilt_when_version_seed_or_size_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "w"
    dw.build_demo_world(root, seed=0, size=SIZE, scale=TINY, workers=1)
    monkeypatch.setattr(dw.world, "GENERATOR_VERSION", dw.GENERATOR_VERSION + 1)
    rebuilt = dw.build_demo_world(root, seed=0, size=SIZE, scale=TINY, workers=1)
    assert not rebuilt.reused
    manifest = json.loads((root / dw.MANIFEST_NAME).read_text())
    assert manifest["version"] == dw.world.GENERATOR_VERSION
    bigger = dw.build_demo_world(root, seed=0, size=(40, 40), scale=TINY, workers=1)
    assert not bigger.reused
    with Image.open(next((root / "FVRID_syn/train_clear").iterdir())) as img:
        assert img.size == (40, 40)
    fewer = dw.build_demo_world(root, size=(40, 40), scale=TINY, images_per_id=(2, 3), workers=1)
    assert not fewer.reused
    assert not list(tmp_path.glob(".w.*"))  # no temporary or old folders left


def test_refuses_to_replace_a_folder_that_is_not_a_demo_world(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(dw.DemoWorldError, match="not a demo world"):
        dw.build_demo_world(tmp_path / "mine", size=SIZE, scale=TINY, workers=1)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_an_interrupted_build_leaves_no_half_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = dw.world._make_identity
    calls = []

    def dying(job):  # the third identity "gets killed"
        calls.append(job.pid)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(dw.world, "_make_identity", dying)
    with pytest.raises(KeyboardInterrupt):
        dw.build_demo_world(tmp_path / "w", size=SIZE, scale=TINY, workers=1)
    assert not (tmp_path / "w").exists()
    assert not list(tmp_path.iterdir())


def test_build_removes_leftovers_of_killed_builds(tmp_path: Path) -> None:
    stale = tmp_path / ".w.building-999999999-1"
    (stale / "FVRID_syn").mkdir(parents=True)
    old = tmp_path / ".w.old-999999999-1"
    old.mkdir()
    dw.build_demo_world(tmp_path / "w", size=SIZE, scale=TINY, workers=1)
    assert not stale.exists() and not old.exists()
    assert (tmp_path / "w" / dw.MANIFEST_NAME).is_file()


def test_progress_is_reported_per_identity(tmp_path: Path) -> None:
    seen = []
    summary = dw.build_demo_world(
        tmp_path / "w", size=SIZE, scale=TINY, workers=1, progress=lambda d, t: seen.append((d, t))
    )
    total = sum(dw.group_sizes(TINY).values())
    assert seen[-1] == (total, total) and len(seen) == total == summary.identities


def test_bad_size_or_scale_is_refused(tmp_path: Path) -> None:
    with pytest.raises(dw.DemoWorldError, match="at least 16"):
        dw.build_demo_world(tmp_path / "w", size=(8, 8))
    with pytest.raises(dw.DemoWorldError, match="scale"):
        dw.build_demo_world(tmp_path / "w", scale=0)
