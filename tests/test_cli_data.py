"""``rvsl-data demo|fog|check`` as a user types them."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest_data import make_fvrid, write_image
from rvsl.cli.data import main
from rvsl.data import fvrid


def write_clear_folder(folder: Path, n: int = 6, size: tuple[int, int] = (24, 20)) -> list[str]:
    names = [f"{7 + i // 2:04d}_c{i % 2 + 1}_{i:03d}.png" for i in range(n)]
    for i, name in enumerate(names):
        write_image(folder / name, seed=i, size=size)
    return names


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def fog(clear: Path, out: Path, *extra: str) -> int:
    return main(["fog", "--clear", str(clear), "--out", str(out), "--workers", "1", *extra])


# ----------------------------------------------------------------------------- demo


def test_demo_builds_then_reuses_the_world(tmp_path: Path, capsys) -> None:
    args = ["demo", "--out", str(tmp_path / "w"), "--seed", "2", "--size", "32", "32"]
    args += ["--scale", "0.01", "--workers", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "built the demo world" in out and "seed 2" in out and "FVRID_real/train_foggy" in out
    assert main(args) == 0
    assert "reused the cached demo world" in capsys.readouterr().out
    assert main([*args, "--force"]) == 0
    assert "built the demo world" in capsys.readouterr().out


def test_demo_refuses_a_foreign_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path), "--scale", "0.01", "--workers", "1"]) == 2
    assert "not a demo world" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- check


def test_check_prints_the_table_and_ok_on_clean_data(tmp_path: Path, capsys) -> None:
    root = make_fvrid(tmp_path)
    assert main(["check", str(root), "--fast"]) == 0
    out = capsys.readouterr().out
    assert "FVRID_syn/train_clear" in out and "ids" in out
    assert out.strip().splitlines()[-1].startswith("ok:")


def test_check_exits_nonzero_with_one_line_per_bad_file(tmp_path: Path, capsys) -> None:
    root = make_fvrid(tmp_path)
    truncated = next((root / "FVRID_real/train_foggy").iterdir())
    truncated.write_bytes(truncated.read_bytes()[:50])
    write_image(root / "FVRID_clear/train_clear/no_pattern.png", 1)
    assert main(["check", str(root)]) == 1
    captured = capsys.readouterr()
    problems = [line for line in captured.out.splitlines() if line.startswith(str(root))]
    assert len(problems) == 2
    assert any(str(truncated) in p for p in problems)
    assert any("no_pattern.png" in p for p in problems)
    assert "2 problem(s)" in captured.err


def test_console_script_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("rvsl-data")
    root = make_fvrid(tmp_path)
    done = subprocess.run(
        [str(script), "check", str(root), "--fast"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "ok:" in done.stdout


# ----------------------------------------------------------------------------- fog


def test_fog_without_depth_writes_the_pair_layout_and_names_the_prior(
    tmp_path: Path, capsys
) -> None:
    names = write_clear_folder(tmp_path / "mine")
    assert fog(tmp_path / "mine", tmp_path / "FVRID_syn") == 0
    out = capsys.readouterr().out
    assert "ground-plane prior" in out
    syn = tmp_path / "FVRID_syn"
    assert sorted(p.name for p in (syn / "train_foggy").iterdir()) == names
    assert folder_bytes(syn / "train_clear") == folder_bytes(tmp_path / "mine")
    pairs = fvrid.list_pairs(syn / "train_clear", syn / "train_foggy")
    assert len(pairs) == len(names)
    for pair in pairs:
        clear = np.asarray(Image.open(pair.clear_path), np.float32)
        hazy = np.asarray(Image.open(pair.hazy_path), np.float32)
        assert hazy.std() < clear.std()
    rows = list(csv.DictReader((syn / "train_haze.csv").open()))
    assert [r["name"] for r in rows] == names and {r["depth"] for r in rows} == {"ground"}
    assert all(1 <= float(r["beta"]) <= 5 and 0.4 <= float(r["airlight"]) <= 1 for r in rows)


def test_fog_with_depth_maps_applies_the_scattering_model_exactly(tmp_path: Path, capsys) -> None:
    names = write_clear_folder(tmp_path / "mine", n=4)
    rng = np.random.default_rng(0)
    (tmp_path / "depth").mkdir()
    for i, name in enumerate(names):
        depth = rng.integers(0, 256, (24, 20), dtype=np.uint8)
        if i % 2:
            Image.fromarray(depth).save(tmp_path / "depth" / name)
        else:
            np.save(tmp_path / "depth" / f"{Path(name).stem}.npy", depth / 255.0)
    args = ["--depth", str(tmp_path / "depth"), "--beta", "2", "3", "--airlight", "0.5", "0.9"]
    assert fog(tmp_path / "mine", tmp_path / "out", *args, "--split", "query") == 0
    assert f"depth maps from {tmp_path / 'depth'}" in capsys.readouterr().out
    rows = {r["name"]: r for r in csv.DictReader((tmp_path / "out/query_haze.csv").open())}
    for name in names:
        beta, a = float(rows[name]["beta"]), float(rows[name]["airlight"])
        assert 2 <= beta <= 3 and 0.5 <= a <= 0.9
        d = (
            np.load(tmp_path / "depth" / f"{Path(name).stem}.npy")
            if (tmp_path / "depth" / f"{Path(name).stem}.npy").exists()
            else np.asarray(Image.open(tmp_path / "depth" / name)) / 255.0
        )
        j = np.asarray(Image.open(tmp_path / "mine" / name), np.float64) / 255.0
        t = np.exp(-beta * d)[..., None]
        expected = np.round(np.clip(j * t + a * (1 - t), 0, 1) * 255)
        got = np.asarray(Image.open(tmp_path / "out/query_foggy" / name), np.float64)
        assert np.abs(got - expected).max() <= 1


def test_fog_missing_depth_map_is_an_error_naming_the_image(tmp_path: Path, capsys) -> None:
    names = write_clear_folder(tmp_path / "mine", n=3)
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.zeros((24, 20), np.uint8)).save(tmp_path / "depth" / names[0])
    assert fog(tmp_path / "mine", tmp_path / "out", "--depth", str(tmp_path / "depth")) == 2
    err = capsys.readouterr().err
    assert names[1] in err and names[2] in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("inside", ["", "sub", "sub/deeper"])
def test_fog_refuses_to_write_into_its_input_folder(tmp_path: Path, capsys, inside: str) -> None:
    write_clear_folder(tmp_path / "mine", n=2)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert fog(tmp_path / "mine", tmp_path / "mine" / inside) == 2
    assert "refusing to write into the input folder" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_fog_adds_twins_beside_a_clear_folder_already_in_place(tmp_path: Path) -> None:
    syn = tmp_path / "FVRID_syn"
    names = write_clear_folder(syn / "gallery_clear", n=3)
    before = folder_bytes(syn / "gallery_clear")
    assert fog(syn / "gallery_clear", syn, "--split", "gallery") == 0
    assert folder_bytes(syn / "gallery_clear") == before
    assert sorted(p.name for p in (syn / "gallery_foggy").iterdir()) == names


def test_fog_never_overwrites_unless_asked(tmp_path: Path, capsys) -> None:
    write_clear_folder(tmp_path / "mine", n=3)
    assert fog(tmp_path / "mine", tmp_path / "out") == 0
    foggy = tmp_path / "out/train_foggy"
    stamps = {p.name: p.stat().st_mtime_ns for p in foggy.iterdir()}
    before = folder_bytes(foggy)
    capsys.readouterr()
    assert fog(tmp_path / "mine", tmp_path / "out", "--seed", "5") == 2
    assert "already exist" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in foggy.iterdir()} == stamps
    assert fog(tmp_path / "mine", tmp_path / "out", "--seed", "5", "--overwrite") == 0
    assert folder_bytes(foggy) != before


def test_fog_parallel_output_equals_serial_output(tmp_path: Path) -> None:
    write_clear_folder(tmp_path / "mine", n=8)
    assert fog(tmp_path / "mine", tmp_path / "serial", "--seed", "3") == 0
    args = ["fog", "--clear", str(tmp_path / "mine"), "--out", str(tmp_path / "parallel")]
    assert main([*args, "--seed", "3", "--workers", "2"]) == 0
    for sub in ("train_clear", "train_foggy"):
        assert folder_bytes(tmp_path / "serial" / sub) == folder_bytes(tmp_path / "parallel" / sub)
    assert (tmp_path / "serial/train_haze.csv").read_bytes() == (
        tmp_path / "parallel/train_haze.csv"
    ).read_bytes()


def test_fog_of_a_file_depends_only_on_seed_and_name(tmp_path: Path) -> None:
    names = write_clear_folder(tmp_path / "all", n=6)
    (tmp_path / "some").mkdir()
    for name in names[3:]:
        (tmp_path / "some" / name).write_bytes((tmp_path / "all" / name).read_bytes())
    assert fog(tmp_path / "all", tmp_path / "a") == 0
    assert fog(tmp_path / "some", tmp_path / "b") == 0
    a, b = folder_bytes(tmp_path / "a/train_foggy"), folder_bytes(tmp_path / "b/train_foggy")
    assert all(a[n] == b[n] for n in names[3:])


def test_fog_warns_about_names_the_loaders_cannot_parse(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "mine" / "holiday.jpg", 0)
    assert fog(tmp_path / "mine", tmp_path / "out", "--prior", "ground+dark") == 0
    captured = capsys.readouterr()
    assert "dark-channel" in captured.out
    assert "holiday.jpg" in captured.err
    assert (tmp_path / "out/train_foggy/holiday.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_fog_rejects_bad_ranges(tmp_path: Path, capsys) -> None:
    write_clear_folder(tmp_path / "mine", n=1)
    assert fog(tmp_path / "mine", tmp_path / "out", "--airlight", "0.5", "1.5") == 2
    assert "airlight" in capsys.readouterr().err
