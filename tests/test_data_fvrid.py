"""FVRID folder parsing: names, junk, twins, relabelling, test sets, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest_data import make_fvrid, write_image, write_split
from rvsl.data import fvrid
from rvsl.data.fvrid import FVRIDFormatError, ImageRecord, PairRecord


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fvrid(tmp_path_factory.mktemp("fvrid"))


def test_parse_name_reads_pid_and_zero_based_camera() -> None:
    assert fvrid.parse_name("0042_c3_0001.jpg") == (42, 2)
    assert fvrid.parse_name("-1_c1_x.png") == (-1, 0)


@pytest.mark.parametrize(
    "name", ["car_c1.png", "12-c1.png", "7_cx_1.png", "1-2_c1.png", "5_c0.png"]
)
def test_parse_name_rejects_bad_names_naming_the_file(name: str) -> None:
    with pytest.raises(FVRIDFormatError, match=name.replace(".", r"\.")):
        fvrid.parse_name(name)


def test_list_images_is_sorted_skips_junk_and_non_images(tmp_path: Path) -> None:
    folder = tmp_path / "split"
    write_split(folder, [7, 2, -1], [2, 2, 3])
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    write_image(folder / "0009_c4_x.BMP", 1)
    records = fvrid.list_images(folder)
    names = [r.path.name for r in records]
    assert names == sorted(names)
    assert all(isinstance(r, ImageRecord) for r in records)
    assert [(r.pid, r.camid) for r in records] == [(2, 0), (2, 1), (7, 0), (7, 1), (9, 3)]
    assert fvrid.list_images(folder) == records  # deterministic


def test_list_images_names_every_bad_file(tmp_path: Path) -> None:
    write_split(tmp_path, [1], 2)
    write_image(tmp_path / "badname.png", 0)
    write_image(tmp_path / "x_c1.jpg", 0)
    with pytest.raises(FVRIDFormatError, match=r"(?s)badname\.png.*x_c1\.jpg"):
        fvrid.list_images(tmp_path)


def test_missing_folder_error_names_path_and_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere.*FVRID_syn/\{train,query,gallery\}"):
        fvrid.list_images(tmp_path / "nowhere")


def test_folder_with_only_junk_is_an_error(tmp_path: Path) -> None:
    write_split(tmp_path, [-1], 2)
    with pytest.raises(FVRIDFormatError, match="no usable images"):
        fvrid.list_images(tmp_path)


def test_list_pairs_matches_twins_by_file_name(root: Path) -> None:
    pairs = fvrid.list_pairs(root / "FVRID_syn/train_clear", root / "FVRID_syn/train_foggy")
    assert len(pairs) == 6 * 4
    assert all(isinstance(p, PairRecord) for p in pairs)
    assert all(p.clear_path.name == p.hazy_path.name for p in pairs)
    assert all(p.hazy_path.parent.name == "train_foggy" for p in pairs)


def test_list_pairs_names_every_image_without_a_twin(tmp_path: Path) -> None:
    clear, hazy = tmp_path / "clear", tmp_path / "hazy"
    write_split(clear, [1, 2], 2)
    write_split(hazy, [1, 2], 2)
    (hazy / "0001_c1_000.png").unlink()
    (hazy / "0002_c2_001.png").unlink()
    write_image(hazy / "0003_c1_000.png", 0)
    with pytest.raises(FVRIDFormatError) as err:
        fvrid.list_pairs(clear, hazy)
    message = str(err.value)
    for name in ("0001_c1_000.png", "0002_c2_001.png", "0003_c1_000.png"):
        assert name in message
    assert "without a hazy twin" in message and "without a clear twin" in message


def test_relabel_gives_contiguous_labels_in_pid_order() -> None:
    records = [ImageRecord(Path(f"{p}.png"), p, 0) for p in (30, 4, 30, 17)]
    relabelled, mapping = fvrid.relabel(records)
    assert mapping == {4: 0, 17: 1, 30: 2}
    assert [r.pid for r in relabelled] == [2, 0, 2, 1]
    assert [r.path for r in relabelled] == [r.path for r in records]


def test_syn_train_pairs_are_relabelled(root: Path) -> None:
    pairs = fvrid.syn_train_pairs(root)
    assert sorted({p.pid for p in pairs}) == list(range(6))


def test_real_train_images_per_stage(root: Path) -> None:
    clear = fvrid.real_train_images(root, 2)
    hazy = fvrid.real_train_images(root, 3)
    assert all(r.path.parent.name == "train_clear" for r in clear)
    assert all(r.path.parent.parent.name == "FVRID_real" for r in hazy)
    assert sorted({r.pid for r in hazy}) == list(range(5))
    with pytest.raises(ValueError, match="stage 1"):
        fvrid.real_train_images(root, 1)


@pytest.mark.parametrize(
    ("name", "folder", "query", "gallery"),
    [
        ("SYN", "FVRID_syn", "query_foggy", "gallery_foggy"),
        ("REAL_CLEAR", "FVRID_clear", "query_clear", "gallery_clear"),
        ("REAL_FOGGY", "FVRID_real", "query_foggy", "gallery_foggy"),
    ],
)
def test_test_sets_read_their_query_and_gallery_folders(
    root: Path, name: str, folder: str, query: str, gallery: str
) -> None:
    q, g = fvrid.load_test_set(root, name)
    assert {r.path.parent for r in q} == {root / folder / query}
    assert {r.path.parent for r in g} == {root / folder / gallery}
    assert {r.pid for r in q} == {50, 51, 52}  # test pids keep their original values


def test_unknown_test_set_is_an_error(root: Path) -> None:
    with pytest.raises(ValueError, match="REAL_FOGGY"):
        fvrid.load_test_set(root, "FOGGY")
