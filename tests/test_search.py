"""rvsl-search: index folders of images, query them, calibrate a "no match" distance; every
bad input answered in one line, and nothing already indexed ever lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from PIL import Image

from rvsl.cli.search import main
from rvsl.inference import Reidentifier
from rvsl.inference.haze import embed_by_choice, haze_score
from rvsl.models import RVSLNet, save_net
from rvsl.search.files import labels_from_path
from rvsl.search.index import SearchIndex

FAST = ["--quiet", "--workers", "0", "--device", "cpu"]


def _picture(rng: np.random.Generator, colour: np.ndarray, size=(40, 36)) -> Image.Image:
    noise = rng.normal(0, 25, (*size, 3))
    return Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8))


def _write_gallery(root: Path, seed: int = 0, cameras=(1, 2), identities=4, per=2) -> Path:
    """``root/c<cam>/id_<pid>/img <k>.jpg``: each identity one colour, seen by each camera."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 225, (identities, 1, 1, 3))
    for cam in cameras:
        for pid in range(identities):
            folder = root / f"c{cam}" / f"id_{pid}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per):
                _picture(rng, colours[pid]).save(folder / f"img {k}.jpg", quality=95)
    return root


def _tiny_net(seed: int) -> RVSLNet:
    torch.manual_seed(seed)
    return RVSLNet("resnet18_ibn_a", num_classes=3, generator_width=8, backbone_width=8).eval()


def _save_tiny(folder: Path, name: str, seed: int) -> Path:
    """A tiny network's checkpoint that records a 32x32 training size."""
    path = folder / name
    save_net(_tiny_net(seed), path, image_size=[32, 32])
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("ckpt"), "tiny.ckpt", seed=0)


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("ckpt"), "other.ckpt", seed=1)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    return _write_gallery(tmp_path_factory.mktemp("footage") / "gallery")


@pytest.fixture(scope="module")
def built(checkpoint, gallery, tmp_path_factory) -> Path:
    """An index of the gallery through the hazy encoder (read-only for the tests using it)."""
    out = tmp_path_factory.mktemp("indexes") / "hazy"
    main(["index", str(checkpoint), str(gallery), "--out", str(out), "--branch", "hazy", *FAST])
    return out


def _fails(capsys, argv: list[str], code: int = 2) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("rvsl-search: ")
    return err[-1]


def _rows(index_dir: Path) -> list[tuple]:
    with sqlite3.connect(index_dir / "images.sqlite") as db:
        return db.execute("SELECT row, path, hash, camera, identity FROM images").fetchall()


def _vectors(index_dir: Path) -> np.ndarray:
    """The stored vectors, read with FAISS itself from the file the manifest names."""
    manifest = json.loads((index_dir / "index.json").read_text())
    stored = faiss.read_index(str(index_dir / manifest["vectors"]))
    return stored.reconstruct_n(0, stored.ntotal)


# ---------------------------------------------------------------------- what an index holds
def test_cameras_and_identities_come_from_folder_names_and_fvrid_file_names():
    assert labels_from_path("/x/cam3/id_17/a.jpg") == ("c3", "17")
    assert labels_from_path("/x/Camera_12/pid-9/a.png") == ("c12", "9")
    assert labels_from_path("/data/query_foggy/0801_c2_000.jpg") == ("c2", "0801")
    assert labels_from_path("/x/y/z.jpg") == (None, None)
    assert labels_from_path("/x/cam3/0801_c2_000.jpg") == ("c3", "0801")  # folder first


def test_an_index_holds_every_image_with_its_camera_identity_and_the_network_that_built_it(
    built, gallery, checkpoint
):
    rows = _rows(built)
    assert len(rows) == 16 and [r[0] for r in rows] == list(range(16))
    assert {r[3] for r in rows} == {"c1", "c2"} and {r[4] for r in rows} == {"0", "1", "2", "3"}
    manifest = json.loads((built / "index.json").read_text())
    assert manifest["checkpoint"]["name"] == "tiny.ckpt"
    assert manifest["image_size"] == [32, 32] and manifest["branch"] == "hazy"
    assert manifest["count"] == 16 and manifest["kind"] == "flat"


def test_indexed_vectors_are_the_reidentifiers_features_and_flat_search_is_exact(built, checkpoint):
    index = SearchIndex.open(built)
    paths = [r["path"] for r in index.rows()]
    feats = Reidentifier.from_checkpoint(checkpoint).embed(paths, branch="hazy").numpy()
    np.testing.assert_allclose(_vectors(built), feats, rtol=1e-5, atol=1e-5)
    distances, ids = index.vectors.search(feats[:3], k=16)
    brute = torch.cdist(torch.from_numpy(feats[:3]).double(), torch.from_numpy(feats).double())
    expected = brute.sort(dim=1).values
    np.testing.assert_allclose(distances, expected.numpy(), rtol=1e-4, atol=1e-4)
    assert (ids[:, 0] == [0, 1, 2]).all()


def test_info_says_what_an_index_holds(built, capsys):
    main(["info", str(built)])
    said = json.loads(capsys.readouterr().out)
    assert said["images"] == 16 and said["branch"] == "hazy" and said["kind"] == "flat"


def test_an_hnsw_index_of_a_small_gallery_finds_what_the_exact_one_finds(
    checkpoint, gallery, built, tmp_path
):
    out = tmp_path / "hnsw"
    main(["index", str(checkpoint), str(gallery), "--out", str(out), "--branch", "hazy",
          "--kind", "hnsw", *FAST])  # fmt: skip
    exact, approx = SearchIndex.open(built), SearchIndex.open(out)
    queries = _vectors(built)[:4]
    np.testing.assert_array_equal(
        approx.vectors.search(queries, 5)[1], exact.vectors.search(queries, 5)[1]
    )


# ---------------------------------------------------------------------- querying
def test_a_query_lists_other_images_nearest_first_in_a_csv_and_a_page(built, gallery, tmp_path):
    out = tmp_path / "results"
    query = gallery / "c1" / "id_2"
    main(["query", str(built), str(query), "--out", str(out), "--top-k", "5", *FAST])
    lines = (out / "matches.csv").read_text().splitlines()
    assert lines[0] == "query,rank,match,camera,timestamp,distance,correct"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 2 * 5  # two query images, five matches each
    for q in {r[0] for r in rows}:
        mine = [r for r in rows if r[0] == q]
        assert [int(r[1]) for r in mine] == [1, 2, 3, 4, 5]
        distances = [float(r[5]) for r in mine]
        assert distances == sorted(distances)
        assert q not in {r[2] for r in mine}  # never the query's own file
    assert (out / "index.html").is_file() and any((out / "images").iterdir())


def test_exclude_same_camera_and_time_window_filter_the_matches(
    checkpoint, gallery, tmp_path, capsys
):
    meta = tmp_path / "meta.csv"
    files = sorted(gallery.rglob("*.jpg"))
    lines = ["path,camera,timestamp"] + [
        f"{p},{'c1' if 'c1' in p.parts else 'c2'},{i * 10}" for i, p in enumerate(files)
    ]
    meta.write_text("\n".join(lines) + "\n")
    out = tmp_path / "idx"
    main(["index", str(checkpoint), str(gallery), "--out", str(out), "--meta", str(meta), *FAST])
    query = next(p for p in files if "c1" in p.parts)
    res = tmp_path / "res"
    main(
        [
            "query",
            str(out),
            str(query),
            "--out",
            str(res),
            "--exclude-same-camera",
            "--meta",
            str(meta),
            *FAST,
        ]
    )
    rows = [r.split(",") for r in (res / "matches.csv").read_text().splitlines()[1:]]
    assert rows and all(r[3] == "c2" for r in rows)
    main(
        [
            "query",
            str(out),
            str(query),
            "--out",
            str(res),
            "--time-window",
            "25",
            "--meta",
            str(meta),
            "--top-k",
            "16",
            *FAST,
        ]
    )
    rows = [r.split(",") for r in (res / "matches.csv").read_text().splitlines()[1:]]
    t0 = files.index(query) * 10
    assert rows and all(abs(float(r[4]) - t0) <= 25 for r in rows)
    assert len(rows) <= 4  # 5 images lie within 25 s, the query itself excluded


def test_calibrate_stores_a_threshold_that_query_then_answers_no_match_with(
    checkpoint, gallery, tmp_path, capsys
):
    out = tmp_path / "idx"
    main(["index", str(checkpoint), str(gallery), "--out", str(out), *FAST])
    main(["calibrate", str(out), str(gallery), "--precision", "0.01", *FAST])
    said = capsys.readouterr().out
    assert "max distance" in said and "stored in" in said
    stored = json.loads((out / "index.json").read_text())["max_distance"]
    assert stored["value"] > 0 and stored["images"] == 16 and stored["identities"] == 4
    res = tmp_path / "res"
    main(["query", str(out), str(gallery / "c1"), "--out", str(res), "--top-k", "16", *FAST])
    rows = [r.split(",") for r in (res / "matches.csv").read_text().splitlines()[1:]]
    assert all(float(r[5]) <= stored["value"] for r in rows if r[5])
    main(
        ["query", str(out), str(gallery / "c1"), "--out", str(res), "--max-distance", "1e-9", *FAST]
    )
    rows = [r.split(",") for r in (res / "matches.csv").read_text().splitlines()[1:]]
    assert len(rows) == 8 and all(r[1:] == [""] * 6 for r in rows)  # one "no match" line each
    assert "no match within the distance threshold" in (res / "index.html").read_text()


def test_calibrating_as_queries_exclude_the_same_camera_ignores_that_cameras_lookalikes(
    built, gallery, tmp_path
):
    from rvsl.search.calibrate import nearest_other

    features = torch.tensor([[0.0, 0.0], [0.1, 0.0], [-1.0, 0.0], [1.1, 0.0]])
    identities, cameras = ["a", "b", "a", "b"], ["c1", "c1", "c2", "c2"]
    _, right = nearest_other(features, identities, cameras, "euclidean")
    assert right.tolist()[:2] == [False, False]  # camera c1's lookalike is nearest
    distances, right = nearest_other(features, identities, cameras, "euclidean", True)
    np.testing.assert_allclose(distances, [1.0, 1.0, 1.0, 1.0], rtol=1e-5)
    assert right.tolist() == [True, True, True, True]
    index = shutil.copytree(built, tmp_path / "idx")
    main(["calibrate", str(index), str(gallery), "--precision", "0.01", "--exclude-same-camera",
          *FAST])  # fmt: skip
    assert json.loads((index / "index.json").read_text())["max_distance"]["exclude_same_camera"]


def test_calibrate_refuses_images_without_identities(built, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    _picture(np.random.default_rng(0), np.array([90, 90, 90])).save(plain / "a.jpg")
    assert "carry identities" in _fails(capsys, ["calibrate", str(built), str(plain), *FAST])


# ---------------------------------------------------------------------- growing an index
def test_indexing_again_adds_only_new_images_and_skips_copies_of_indexed_ones(
    checkpoint, gallery, tmp_path, capsys
):
    out = tmp_path / "idx"
    main(["index", str(checkpoint), str(gallery / "c1"), "--out", str(out), *FAST])
    before_rows, before_vectors = _rows(out), _vectors(out)
    more = tmp_path / "more"
    shutil.copytree(gallery / "c2", more / "c2")
    shutil.copy(gallery / "c1" / "id_0" / "img 0.jpg", more / "copy of img 0.jpg")
    capsys.readouterr()
    main(["index", str(checkpoint), str(gallery / "c1"), str(more), "--out", str(out), *FAST])
    said = capsys.readouterr().out
    assert "16 images (8 added, 8 already indexed, 1 duplicate content" in said
    assert _rows(out)[:8] == before_rows
    np.testing.assert_array_equal(_vectors(out)[:8], before_vectors)
    assert len(list(out.glob("vectors-*.faiss"))) == 1  # the previous vector file is gone


def test_an_index_keeps_its_settings_and_its_network(
    built, gallery, other_checkpoint, checkpoint, capsys
):
    said = _fails(
        capsys, ["index", str(other_checkpoint), str(gallery), "--out", str(built), *FAST]
    )
    assert "tiny.ckpt" in said and "other.ckpt" in said
    said = _fails(
        capsys,
        ["index", str(checkpoint), str(gallery), "--out", str(built), "--branch", "clear", *FAST],
    )
    assert "branch=hazy (asked clear)" in said


# ---------------------------------------------------------------------- bad input
def test_an_unreadable_file_is_skipped_named_and_counted_and_strict_stops(
    checkpoint, tmp_path, capsys
):
    folder = _write_gallery(tmp_path / "g", identities=2, per=1)
    (folder / "c1" / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not an image either, and not a picture name")
    out = tmp_path / "idx"
    main(["index", str(checkpoint), str(folder), "--out", str(out), *FAST])
    said = capsys.readouterr().out
    assert "4 images (4 added" in said and "1 unreadable" in said and "broken.jpg" in said
    strict = tmp_path / "strict"
    said = _fails(
        capsys, ["index", str(checkpoint), str(folder), "--out", str(strict), "--strict", *FAST]
    )
    assert "--strict" in said and "broken.jpg" in said
    assert SearchIndex.open(strict).manifest["count"] == 0


def test_empty_or_missing_folders_are_refused(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    said = _fails(
        capsys,
        ["index", str(checkpoint), str(tmp_path / "empty"), "--out", str(tmp_path / "i"), *FAST],
    )
    assert "no images" in said
    said = _fails(
        capsys,
        ["index", str(checkpoint), str(tmp_path / "nope"), "--out", str(tmp_path / "i"), *FAST],
    )
    assert "no such folder" in said


def test_a_query_with_another_checkpoint_is_refused_by_name(
    built, gallery, other_checkpoint, tmp_path, capsys
):
    said = _fails(
        capsys,
        [
            "query",
            str(built),
            str(gallery),
            "--out",
            str(tmp_path / "r"),
            "--checkpoint",
            str(other_checkpoint),
            *FAST,
        ],
    )
    assert "tiny.ckpt" in said and "other.ckpt" in said


def test_missing_foreign_and_damaged_index_folders_are_refused(built, gallery, tmp_path, capsys):
    argv = [str(gallery), "--out", str(tmp_path / "r"), *FAST]
    assert "no such index folder" in _fails(capsys, ["query", str(tmp_path / "none"), *argv])
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "photo.jpg").write_bytes(b"x")
    assert "not an rvsl-search index" in _fails(capsys, ["query", str(tmp_path / "plain"), *argv])
    damaged = tmp_path / "damaged"
    shutil.copytree(built, damaged)
    manifest = json.loads((damaged / "index.json").read_text())
    (damaged / "index.json").write_text(json.dumps(manifest | {"count": 99}))
    assert "damaged" in _fails(capsys, ["query", str(damaged), *argv])
    (damaged / "index.json").write_text("{not json")
    assert "cannot read index.json" in _fails(capsys, ["query", str(damaged), *argv])


def test_a_meta_csv_naming_missing_files_or_lacking_columns_is_refused(
    checkpoint, gallery, tmp_path, capsys
):
    argv = ["index", str(checkpoint), str(gallery), "--out", str(tmp_path / "i"), *FAST]
    meta = tmp_path / "meta.csv"
    meta.write_text("file,cam\na.jpg,c1\n")
    assert "no path or camera column" in _fails(capsys, [*argv, "--meta", str(meta)])
    meta.write_text("path,camera\nghost.jpg,c1\n")
    assert "do not exist" in _fails(capsys, [*argv, "--meta", str(meta)])
    meta.write_text(f"path,camera,timestamp\n{next(gallery.rglob('*.jpg'))},c1,yesterday\n")
    assert "neither seconds nor an ISO 8601" in _fails(capsys, [*argv, "--meta", str(meta)])


# ---------------------------------------------------------------------- branch choice
def test_auto_embeds_each_image_through_the_encoder_its_haze_picks_and_fuse_averages_both():
    net = _tiny_net(seed=0)
    clear = torch.rand(2, 3, 32, 32) * 0.3  # dark pixels: a low dark channel
    hazy = 0.6 + torch.rand(2, 3, 32, 32) * 0.4  # lifted toward a bright airlight
    images = torch.cat([clear, hazy])
    scores = haze_score(images)
    assert (scores[:2] < 0.24).all() and (scores[2:] > 0.24).all()
    with torch.no_grad():
        feats, used = embed_by_choice(net, images, "auto", scores > 0.24)
        both = net.embed(images, "both")
        fused, _ = embed_by_choice(net, images, "fuse", scores > 0.24)
    assert used == ["clear", "clear", "hazy", "hazy"]
    torch.testing.assert_close(feats[:2], both["feat_clear"][:2])
    torch.testing.assert_close(feats[2:], both["feat_hazy"][2:])
    normalized = torch.nn.functional.normalize
    expected = (normalized(both["feat_hazy"], dim=1) + normalized(both["feat_clear"], dim=1)) / 2
    torch.testing.assert_close(fused, expected)


# ---------------------------------------------------------------------- processes
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rvsl.cli.search", *args]


def test_ctrl_c_during_index_keeps_every_committed_image_and_a_rerun_finishes(checkpoint, tmp_path):
    folder = _write_gallery(tmp_path / "many", cameras=(1, 2, 3, 4), identities=6, per=2)
    out = tmp_path / "idx"
    argv = _cli(
        "index",
        str(checkpoint),
        str(folder),
        "--out",
        str(out),
        "--chunk",
        "8",
        "--batch-size",
        "2",
        *FAST,
    )
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job (`make test &`) ignores SIGINT, and so would its children
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        manifest = out / "index.json"
        if manifest.exists() and json.loads(manifest.read_text())["count"] >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "indexing ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "run the same command again" in err
    kept = SearchIndex.open(out)
    assert 8 <= len(kept) < 48 and len(kept) % 8 == 0  # whole chunks only
    assert len(_rows(out)) >= len(kept)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"48 images ({48 - len(kept)} added, {len(kept)} already indexed" in done.stdout
    rows = _rows(out)
    assert len(rows) == 48 and len({r[1] for r in rows}) == 48
    assert not (out / ".staging").exists()


def test_two_gloo_processes_index_exactly_what_one_process_does(
    checkpoint, built, gallery, tmp_path
):
    out = tmp_path / "ddp"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        _cli(
            "index",
            str(checkpoint),
            str(gallery),
            "--out",
            str(out),
            "--branch",
            "hazy",
            "--devices",
            "2",
            "--chunk",
            "5",
            *FAST,
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("16 images (16 added") == 1  # rank 0 reports; rank 1 only embeds
    assert [r[1:] for r in _rows(out)] == [r[1:] for r in _rows(built)]
    np.testing.assert_allclose(_vectors(out), _vectors(built), rtol=1e-5, atol=1e-5)
