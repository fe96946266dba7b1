"""Reliability of the data tools: nothing of the user's is deleted or replaced, and unreadable,
dangling or 16-bit images are named or read correctly, never dropped or read as white."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest_data import make_fvrid, write_image
from rvsl.cli.data import main as data_main
from rvsl.data import demo_world as dw
from rvsl.data import fog, fvrid
from rvsl.data.check import check_dataset
from rvsl.data.transforms import ImageReadError, load_image
from rvsl.training.train import prepare_data
from rvsl.utils.config import RunConfigError

SIZE = (32, 32)
TINY = 0.01  # 2 identities per group


def hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "world"
    dw.build_demo_world(root, seed=0, size=SIZE, scale=TINY, workers=1)
    return root


@pytest.fixture
def copy(world: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(world, tmp_path / "copy"))


# ----------------------------------------------------------------------------- demo world


def test_a_demo_world_holding_a_users_file_is_not_rebuilt_and_keeps_every_byte(copy: Path):
    (copy / "MY_NOTES.txt").write_text("three weeks of notes")
    before = hashes(copy)
    with pytest.raises(dw.DemoWorldError) as err:
        dw.build_demo_world(copy, seed=1, size=SIZE, scale=TINY, workers=1)
    message = str(err.value)
    assert "\n" not in message and str(copy) in message and "MY_NOTES.txt" in message
    assert "seed 0 (requested 1)" in message and "fresh folder (--out <new folder>)" in message
    assert hashes(copy) == before
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy"]  # nothing left aside


def test_an_edited_image_in_a_demo_world_also_stops_a_rebuild(copy: Path) -> None:
    image = next((copy / "FVRID_real/train_foggy").iterdir())
    image.write_bytes(image.read_bytes() + b"retouched")
    before = hashes(copy)
    with pytest.raises(dw.DemoWorldError, match=rf"{image.name} \(changed\)"):
        dw.build_demo_world(copy, seed=0, size=(40, 40), scale=TINY, workers=1)
    assert hashes(copy) == before


def test_a_folder_holding_exactly_another_worlds_output_is_rebuilt(copy: Path) -> None:
    rebuilt = dw.build_demo_world(copy, seed=1, size=SIZE, scale=TINY, workers=1)
    assert not rebuilt.reused and dw.read_manifest(copy)["seed"] == 1
    assert dw.foreign_files(copy) == []
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy"]


def test_the_world_manifest_lists_every_file_with_its_hash(world: Path) -> None:
    listed = dw.read_manifest(world)["files"]
    on_disk = {k: v for k, v in hashes(world).items() if k != dw.MANIFEST_NAME}
    assert listed == on_disk


def test_a_world_json_without_a_file_list_admits_only_generator_images(copy: Path) -> None:
    manifest = dw.read_manifest(copy)
    del manifest["files"]  # as the previous generator wrote it
    (copy / dw.MANIFEST_NAME).write_text(json.dumps(manifest))
    (copy / "FVRID_syn/train_clear/holiday.png").write_bytes(b"mine")
    with pytest.raises(dw.DemoWorldError, match=r"holiday\.png"):
        dw.build_demo_world(copy, seed=1, size=SIZE, scale=TINY, workers=1)
    (copy / "FVRID_syn/train_clear/holiday.png").unlink()
    assert not dw.build_demo_world(copy, seed=1, size=SIZE, scale=TINY, workers=1).reused


def test_a_stale_old_world_holding_a_users_file_is_not_deleted(tmp_path: Path) -> None:
    stale = tmp_path / ".w.old-999999999-1"
    stale.mkdir()
    (stale / "MY_NOTES.txt").write_text("mine")
    dw.build_demo_world(tmp_path / "w", size=SIZE, scale=TINY, workers=1)
    assert (stale / "MY_NOTES.txt").read_text() == "mine"


def test_rvsl_train_stops_with_one_sentence_before_touching_a_users_demo_folder(
    copy: Path, compose_train
) -> None:
    (copy / "MY_NOTES.txt").write_text("three weeks of notes")
    before = hashes(copy)
    cfg = compose_train(
        "data=demo", f"data.root={copy}", "data.world_scale=0.02", "data.image_size=[32,32]"
    )
    with pytest.raises(RunConfigError) as err:
        prepare_data(cfg)
    message = str(err.value)
    assert "\n" not in message and "MY_NOTES.txt" in message and "data.root=<new folder>" in message
    assert "scale 0.01 (requested 0.02)" in message
    assert hashes(copy) == before


def test_rvsl_data_demo_refuses_a_users_folder_with_exit_2(copy: Path, capsys) -> None:
    (copy / "MY_NOTES.txt").write_text("notes")
    before = hashes(copy)
    args = ["demo", "--out", str(copy), "--seed", "4", "--size", "32", "32"]
    assert data_main([*args, "--scale", str(TINY), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "MY_NOTES.txt" in err and "--out <new folder>" in err
    assert hashes(copy) == before


# ----------------------------------------------------------------------------- dangling links


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_fvrid(tmp_path / "FVRID")


def dangle(folder: Path, name: str) -> Path:
    link = folder / name
    link.symlink_to(folder / "moved_away.png")
    return link


def test_a_dangling_symlink_in_a_gallery_is_listed_and_fails_by_name(dataset: Path) -> None:
    link = dangle(dataset / "FVRID_real/gallery_foggy", "0050_c3_099.png")
    assert link in [r.path for r in fvrid.list_images(link.parent)]
    with pytest.raises(ImageReadError, match=r"0050_c3_099\.png: dangling symbolic link"):
        load_image(link)


@pytest.mark.parametrize("fast", [True, False])
def test_rvsl_data_check_reports_a_dangling_symlink(dataset: Path, fast: bool, capsys) -> None:
    link = dangle(dataset / "FVRID_clear/query_clear", "0051_c2_099.png")
    assert data_main(["check", str(dataset), *(["--fast"] if fast else [])]) == 1
    assert f"{link}: dangling symbolic link" in capsys.readouterr().out


def test_a_dangling_test_image_stops_the_run_before_training(dataset: Path, compose_train):
    link = dangle(dataset / "FVRID_real/gallery_foggy", "0052_c1_099.png")
    cfg = compose_train(f"data.root={dataset}", "data.strict=false")
    with pytest.raises(RunConfigError, match=f"{link}: dangling symbolic link"):
        prepare_data(cfg)


def test_a_dangling_training_image_counts_as_an_unreadable_one(
    dataset: Path, compose_train, caplog
) -> None:
    link = dangle(dataset / "FVRID_clear/train_clear", "0100_c2_099.png")
    with caplog.at_level(logging.WARNING):
        prepare_data(compose_train(f"data.root={dataset}", "data.strict=false", "stage=real_clear"))
    assert "1 unreadable training image(s) will be skipped" in caplog.text
    assert str(link) in caplog.text
    with pytest.raises(RunConfigError, match=r"data\.strict=false would skip"):
        prepare_data(compose_train(f"data.root={dataset}", "data.strict=true", "stage=real_clear"))


# ----------------------------------------------------------------------------- 16-bit images


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG (grey (H, W) or RGB (H, W, 3)) written byte by byte."""
    colour = 2 if values.ndim == 3 else 0
    h, w = values.shape[:2]
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))


def test_a_16_bit_grey_png_loads_as_its_high_byte_not_white(tmp_path: Path) -> None:
    values = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    Image.fromarray(values).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as img:
        assert img.mode == "I;16"  # Pillow's own convert("RGB") clips this to 255
    pixels = load_image(tmp_path / "grey16.png").numpy()
    expected = (values >> 8).astype(np.uint8)
    assert all((pixels[c] == expected).all() for c in range(3))


def test_a_48_bit_rgb_png_loads_as_its_high_byte(tmp_path: Path) -> None:
    values = np.random.default_rng(0).integers(0, 65536, (8, 12, 3)).astype(np.uint16)
    (tmp_path / "rgb48.png").write_bytes(png16(values))
    pixels = load_image(tmp_path / "rgb48.png").permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pixels, (values >> 8).astype(np.uint8))


def test_the_check_accepts_a_16_bit_image_that_training_reads_correctly(dataset: Path) -> None:
    target = next((dataset / "FVRID_real/train_foggy").iterdir())
    values = np.tile(np.linspace(4096, 61440, 16).astype(np.uint16), (32, 1))
    Image.fromarray(values).save(target)
    for fast in (True, False):
        report = check_dataset(dataset, fast=fast)
        assert report.ok, report.problems
    assert load_image(target).max() < 255


def test_an_image_whose_values_would_be_clipped_is_refused_by_name(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 1000, np.int32), mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(ImageReadError, match=r"wide\.tif.*values from 1000 to 1000"):
        load_image(tmp_path / "wide.tif")


# ----------------------------------------------------------------------------- fog


@pytest.fixture
def clear(tmp_path: Path) -> Path:
    for i in range(4):
        write_image(tmp_path / "mine" / f"{i + 1:04d}_c1_000.png", seed=i)
    return tmp_path / "mine"


def run_fog(clear: Path, out: Path, *extra: str) -> int:
    return data_main(["fog", "--clear", str(clear), "--out", str(out), "--workers", "1", *extra])


def test_fog_skips_a_corrupt_clear_image_and_names_it(clear: Path, tmp_path: Path, capsys):
    (clear / "0002_c1_000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (clear / "0003_c1_000.png").unlink()
    dangle(clear, "0003_c1_000.png")
    assert run_fog(clear, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s)" in err and "0002_c1_000.png" in err
    assert "0003_c1_000.png (dangling symbolic link" in err
    names = sorted(p.name for p in (tmp_path / "out/train_foggy").iterdir())
    assert names == ["0001_c1_000.png", "0004_c1_000.png"]
    rows = list(csv.DictReader((tmp_path / "out/train_haze.csv").open()))
    assert [r["name"] for r in rows] == names


def test_fog_strict_stops_at_a_corrupt_image_and_writes_nothing(clear: Path, tmp_path: Path):
    (clear / "0002_c1_000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(fog.HazeError, match=r"0002_c1_000\.png.*without --strict"):
        fog.fog_folder(clear, tmp_path / "out", workers=1, strict=True)
    assert not (tmp_path / "out").exists()


def test_a_truncated_image_found_only_when_decoded_is_skipped_too(clear: Path, tmp_path: Path):
    data = (clear / "0002_c1_000.png").read_bytes()
    (clear / "0002_c1_000.png").write_bytes(data[: len(data) // 2])  # header intact
    summary = fog.fog_folder(clear, tmp_path / "out", workers=1)
    assert [name for name, _ in summary.skipped] == ["0002_c1_000.png"] and summary.images == 3
    with pytest.raises(fog.HazeError, match=r"0002_c1_000\.png"):
        fog.fog_folder(clear, tmp_path / "strict", workers=1, strict=True)
    assert not (tmp_path / "strict").exists()  # no stage, no half-written folder


def test_an_interrupted_fog_run_leaves_the_output_folder_as_it_was(
    clear: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "FVRID_syn"
    (out / "train_foggy").mkdir(parents=True)
    (out / "train_foggy/README.txt").write_text("my folder")
    before = hashes(out)
    real, calls = fog._fog_one, []

    def dying(task):  # the third image "gets killed"
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(fog, "_fog_one", dying)
    with pytest.raises(KeyboardInterrupt):
        fog.fog_folder(clear, out, workers=1)
    assert hashes(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["train_foggy"]


def test_fog_refuses_a_depth_map_of_another_aspect_ratio_by_name(clear, tmp_path, capsys):
    depth = tmp_path / "depth"
    depth.mkdir()
    for i in range(4):  # the images are 32 x 16
        Image.fromarray(np.zeros((16, 8), np.uint8)).save(depth / f"{i + 1:04d}_c1_000.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(depth / "0003_c1_000.png")
    assert run_fog(clear, tmp_path / "out", "--depth", str(depth)) == 2
    err = capsys.readouterr().err
    assert "0003_c1_000.png (32 x 32) for 0003_c1_000.png (32 x 16)" in err and "stretched" in err
    assert not (tmp_path / "out").exists()
    Image.fromarray(np.zeros((11, 5), np.uint8)).save(depth / "0003_c1_000.png")  # rounding
    assert run_fog(clear, tmp_path / "out", "--depth", str(depth)) == 0


def test_fog_overwrite_replaces_only_files_fog_wrote(clear: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert run_fog(clear, out) == 0
    write_image(clear / "0009_c2_000.png", seed=9)
    (out / "train_foggy/0009_c2_000.png").write_bytes(b"somebody else's picture")
    assert run_fog(clear, out, "--seed", "5", "--overwrite") == 2
    assert "0009_c2_000.png" in capsys.readouterr().err
    assert (out / "train_foggy/0009_c2_000.png").read_bytes() == b"somebody else's picture"
    (out / "train_foggy/0009_c2_000.png").unlink()
    retouched = out / "train_foggy/0001_c1_000.png"
    retouched.write_bytes(retouched.read_bytes() + b"retouched")
    assert run_fog(clear, out, "--seed", "5", "--overwrite") == 2
    assert "changed since" in capsys.readouterr().err
    retouched.unlink()
    assert run_fog(clear, out, "--seed", "5", "--overwrite") == 0
    rows = {r["name"]: r for r in csv.DictReader((out / "train_haze.csv").open())}
    assert len(rows) == 5 and all(len(r["foggy_sha256"]) == 64 for r in rows.values())


def test_fog_overwrite_refuses_a_parameter_file_it_did_not_write(clear, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/train_haze.csv").write_text("my,own,table\n")
    assert run_fog(clear, tmp_path / "out", "--overwrite") == 2
    assert "train_haze.csv" in capsys.readouterr().err
    assert (tmp_path / "out/train_haze.csv").read_text() == "my,own,table\n"
