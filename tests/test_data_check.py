"""``check_dataset``: every kind of bad input is found and named; clean data passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest_data import make_fvrid, write_image, write_split
from rvsl.data.check import (
    LAYOUT_FOLDERS,
    DatasetError,
    check_dataset,
    require_valid_dataset,
    required_folders,
)
from rvsl.data.fvrid import FVRIDFormatError


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fvrid(tmp_path_factory.mktemp("clean"))


@pytest.fixture
def root(clean: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clean dataset for a test to break."""
    return Path(shutil.copytree(clean, tmp_path / "data"))


def only_problem(report, needle: str) -> str:
    assert len(report.problems) == 1, report.problems
    assert needle in report.problems[0], report.problems[0]
    return report.problems[0]


@pytest.mark.parametrize("fast", [False, True])
def test_clean_dataset_passes(clean: Path, fast: bool) -> None:
    report = check_dataset(clean, fast=fast)
    assert report.ok and report.problems == [] and report.warnings == []
    assert [s.folder for s in report.splits] == list(LAYOUT_FOLDERS)


def test_table_counts_identities_images_cameras_and_junk(root: Path) -> None:
    write_split(root / "FVRID_syn/train_clear", [-1], 2)
    write_split(root / "FVRID_syn/train_foggy", [-1], 2)
    report = check_dataset(root)
    stats = {s.folder: s for s in report.splits}
    train = stats["FVRID_syn/train_clear"]
    assert (train.identities, train.images, train.cameras, train.junk) == (6, 24, 3, 2)
    table = report.table()
    assert table.splitlines()[0].split() == ["split", "ids", "images", "cams", "junk"]
    assert "FVRID_real/gallery_foggy" in table and len(table.splitlines()) == 13


def test_missing_folder_is_named(root: Path) -> None:
    shutil.rmtree(root / "FVRID_real/query_foggy")
    report = check_dataset(root)
    line = only_problem(report, "missing folder")
    assert line.startswith(str(root / "FVRID_real/query_foggy"))
    assert "missing" in report.table()


def test_missing_root_is_a_problem(tmp_path: Path) -> None:
    only_problem(check_dataset(tmp_path / "nowhere"), "not found")


def test_empty_folder_is_named(root: Path) -> None:
    for p in (root / "FVRID_clear/train_clear").iterdir():
        p.unlink()
    only_problem(check_dataset(root), str(root / "FVRID_clear/train_clear"))


def test_bad_file_name_is_named(root: Path) -> None:
    write_image(root / "FVRID_clear/train_clear/car_left.png", 0)
    line = only_problem(check_dataset(root), "car_left.png")
    assert line.startswith(str(root / "FVRID_clear/train_clear/car_left.png"))
    assert "<pid>_c<cam>" in line


@pytest.mark.parametrize("fast", [False, True])
def test_truncated_png_is_named(root: Path, fast: bool) -> None:
    path = next((root / "FVRID_real/train_foggy").iterdir())
    path.write_bytes(path.read_bytes()[:-40])
    report = check_dataset(root, fast=fast)
    line = only_problem(report, path.name)
    assert line.startswith(str(path)) and ("truncated" in line or "unreadable" in line)
    assert report.unreadable == {path: line}  # told apart from layout problems


@pytest.mark.parametrize("fast", [False, True])
def test_truncated_jpeg_is_named(root: Path, fast: bool) -> None:
    from PIL import Image

    path = root / "FVRID_real/train_foggy/0200_c1_099.jpg"
    with Image.open(next((root / "FVRID_real/train_foggy").iterdir())) as img:
        img.convert("RGB").save(path, quality=80)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    only_problem(check_dataset(root, fast=fast), "0200_c1_099.jpg")


def test_file_that_is_not_an_image_is_named(root: Path) -> None:
    (root / "FVRID_syn/gallery_clear/0050_c1_009.png").write_text("hello")
    (root / "FVRID_syn/gallery_foggy/0050_c1_009.png").write_text("hello")
    report = check_dataset(root, fast=True)
    assert len(report.problems) == 2 and all("0050_c1_009.png" in p for p in report.problems)


def test_synthetic_image_without_its_twin_is_named(root: Path) -> None:
    lonely = next((root / "FVRID_syn/train_foggy").iterdir())
    lonely.unlink()
    line = only_problem(check_dataset(root), "no hazy twin")
    assert line.startswith(str(root / "FVRID_syn/train_clear" / lonely.name))
    extra = root / "FVRID_syn/query_foggy/0050_c2_777.png"
    write_image(extra, 1)
    report = check_dataset(root)
    assert any(p.startswith(str(extra)) and "no clear twin" in p for p in report.problems)


def test_single_image_training_identity_is_named(root: Path) -> None:
    for kind in ("clear", "foggy"):
        write_split(root / f"FVRID_syn/train_{kind}", [77], 1)
    line = only_problem(check_dataset(root), "identity 77 has a single image")
    assert line.startswith(str(root / "FVRID_syn/train_clear/0077_c1_000.png"))


def test_single_image_real_identity_only_warns(root: Path) -> None:
    write_split(root / "FVRID_real/train_foggy", [300], 1)
    report = check_dataset(root)
    assert report.ok
    assert any("0300_c1_000.png" in w and "single image" in w for w in report.warnings)


def test_query_identity_absent_from_gallery_is_named(root: Path) -> None:
    write_split(root / "FVRID_real/query_foggy", [60], 1)
    line = only_problem(check_dataset(root), "query identity 60 has no image")
    assert line.startswith(str(root / "FVRID_real/query_foggy/0060_c1_000.png"))


def test_query_matched_only_from_its_own_camera_warns(root: Path) -> None:
    write_split(root / "FVRID_clear/query_clear", [61], 1)
    write_image(root / "FVRID_clear/gallery_clear/0061_c1_005.png", 3)
    report = check_dataset(root)
    assert report.ok
    assert any("0061_c1_000.png" in w and "skips this query" in w for w in report.warnings)


def test_every_problem_gets_its_own_line(root: Path) -> None:
    shutil.rmtree(root / "FVRID_clear/gallery_clear")
    write_image(root / "FVRID_syn/train_clear/oops.png", 0)
    next((root / "FVRID_syn/train_foggy").iterdir()).unlink()
    write_split(root / "FVRID_real/query_foggy", [60], 1)
    problems = check_dataset(root).problems
    assert len(problems) == 5  # folder, name, twin of the deleted file, twin of oops, query
    assert all("\n" not in p for p in problems)


def test_checking_some_folders_only(root: Path) -> None:
    shutil.rmtree(root / "FVRID_real")
    folders = required_folders(2)
    assert "FVRID_clear/train_clear" in folders and "FVRID_real/train_foggy" not in folders
    report = check_dataset(root, folders=required_folders(2, test_sets=["SYN", "REAL_CLEAR"]))
    assert report.ok, report.problems
    assert len(report.splits) == 9  # SYN's query/gallery folders with their clear twins


def test_required_folders_follow_the_stage() -> None:
    assert required_folders(1, test_sets=[]) == ["FVRID_syn/train_clear", "FVRID_syn/train_foggy"]
    assert "FVRID_real/train_foggy" in required_folders(3)
    assert "FVRID_real/query_foggy" in required_folders(1, test_sets=["real_foggy"])
    # SYN's clear twins: the dehazer's ground truth and, with syn_clear_input=clear, the
    # clear branch's input
    assert {"FVRID_syn/query_clear", "FVRID_syn/gallery_clear"} <= set(
        required_folders(1, test_sets=["SYN"])
    )


def test_require_valid_dataset_raises_listing_problems(root: Path) -> None:
    assert require_valid_dataset(root).ok
    shutil.rmtree(root / "FVRID_syn/train_foggy")
    with pytest.raises(
        DatasetError, match=r"(?s)1 problem.*train_foggy: missing folder.*rvsl-data check"
    ) as info:
        require_valid_dataset(root)
    assert isinstance(info.value, FVRIDFormatError) and len(info.value.problems) == 1


def test_require_valid_dataset_shows_at_most_twenty_lines(root: Path) -> None:
    for i in range(25):
        write_image(root / f"FVRID_clear/train_clear/bad{i}.png", i)
    with pytest.raises(DatasetError, match=r"and 5 more") as info:
        require_valid_dataset(root)
    assert len(info.value.problems) == 25
