"""Bad images in the training data: skipped with a warning and counted, or (strict) fatal.

A copy of the tiny dataset gets a truncated clear image and a hazy twin of random bytes in the
synthetic training split, and a truncated image in the real hazy training split.
"""

from __future__ import annotations

import csv
import logging
import random
import shutil
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import ImageFile
from torch.utils.data import default_collate

from rvsl.data import fvrid
from rvsl.data.check import check_dataset, require_valid_dataset, required_folders
from rvsl.data.datasets import ImageDataset, RetrievalDataset, SyntheticPairDataset
from rvsl.data.skip_counter import SkippedImagesCounter, skipped_indices
from rvsl.data.transforms import ImageReadError
from rvsl.training.train import prepare_data, train
from rvsl.utils.config import RunConfigError

TRUNCATED_CLEAR = "FVRID_syn/train_clear/0003_c1_000.png"
RANDOM_HAZY = "FVRID_syn/train_foggy/0005_c2_001.png"
TRUNCATED_REAL = "FVRID_real/train_foggy/0200_c1_000.png"
HIDDEN = "FVRID_syn/train_clear/0008_c1_000.png"  # cut in its pixel data only


def truncate(path: Path) -> None:
    """Cut the file in half: the header survives, the pixel data does not."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def cut_pixel_data(path: Path) -> None:
    """Halve a PNG's compressed pixel stream but rewrite valid chunks and CRCs around it, so the
    header-level (fast) check passes and only decoding fails."""
    data = path.read_bytes()
    chunks, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        chunks.append((data[i + 4 : i + 8], data[i + 8 : i + 8 + n]))
        i += 12 + n
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    out = data[:8]
    for kind, body in chunks:
        if kind == b"IDAT":
            body, idat = idat[: len(idat) // 2], b""
            if not body:
                continue
        out += struct.pack(">I", len(body)) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    path.write_bytes(out)


@pytest.fixture
def corrupt(tiny_fvrid: Path, tmp_path: Path) -> Path:
    """A copy of the shared tiny dataset (never modified) with three bad training files."""
    root = Path(shutil.copytree(tiny_fvrid, tmp_path / "FVRID"))
    truncate(root / TRUNCATED_CLEAR)
    (root / RANDOM_HAZY).write_bytes(random.Random(0).randbytes(700))
    truncate(root / TRUNCATED_REAL)
    return root


def _pair_index(pairs: list[fvrid.PairRecord], rel: str) -> int:
    return next(i for i, p in enumerate(pairs) if rel.split("/")[-1] == Path(p.clear_path).name)


# ----------------------------------------------------------------------------- datasets


def test_pil_refuses_truncated_files() -> None:
    import pytorch_lightning  # noqa: F401  (nothing imported on the way may turn this on)

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("rel", [TRUNCATED_CLEAR, RANDOM_HAZY])
def test_an_unreadable_pair_is_replaced_by_the_next_pair_of_its_identity(corrupt, rel, caplog):
    pairs = fvrid.syn_train_pairs(corrupt)
    data = SyntheticPairDataset(pairs, strict=False)
    bad = _pair_index(pairs, rel)
    with caplog.at_level(logging.WARNING, logger="rvsl.data.datasets"):
        item = data[bad]
    assert item["skipped"] == 1 and item["pid"] == pairs[bad].pid and item["index"] != bad
    assert item["index"] == bad + 1  # the next index of that identity: deterministic
    assert item["clear"].shape == (3, 32, 16)
    assert rel.split("/")[-1] in caplog.text and "data.strict=true" in caplog.text
    assert data[bad + 1]["skipped"] == 0


def test_an_unreadable_real_image_is_replaced_by_one_of_its_identity(corrupt, caplog):
    records = fvrid.real_train_images(corrupt, 3)
    data = ImageDataset(records, strict=False)
    bad = next(i for i, r in enumerate(records) if str(r.path).endswith(TRUNCATED_REAL))
    with caplog.at_level(logging.WARNING, logger="rvsl.data.datasets"):
        item = data[bad]
    assert item["skipped"] == 1 and item["pid"] == records[bad].pid
    assert item["path"] != str(records[bad].path)
    assert "0200_c1_000.png" in caplog.text


def test_the_last_image_of_an_identity_wraps_to_its_first(corrupt):
    records = fvrid.real_train_images(corrupt, 3)
    same = [i for i, r in enumerate(records) if r.pid == records[-1].pid]
    for i in same[1:]:
        truncate(Path(records[i].path))
    item = ImageDataset(records, strict=False)[same[-1]]
    assert item["index"] == same[0] and item["skipped"] == 1


def test_an_identity_with_no_readable_image_borrows_another_identitys(corrupt):
    records = fvrid.real_train_images(corrupt, 3)
    for r in records:
        if r.pid == records[0].pid:
            truncate(Path(r.path))
    item = ImageDataset(records, strict=False)[0]
    assert item["skipped"] == 1 and item["pid"] != records[0].pid


def test_strict_raises_at_once_naming_the_file(corrupt):
    pairs = fvrid.syn_train_pairs(corrupt)
    data = SyntheticPairDataset(pairs, strict=True)
    with pytest.raises(ImageReadError, match=r"0003_c1_000\.png.*data\.strict=false"):
        data[_pair_index(pairs, TRUNCATED_CLEAR)]


def test_a_known_bad_file_is_not_read_again(corrupt, monkeypatch):
    import rvsl.data.datasets as datasets

    opened: list[str] = []
    real_load = datasets.load_image

    def counting_load(path):
        opened.append(Path(path).name)
        return real_load(path)

    monkeypatch.setattr(datasets, "load_image", counting_load)
    records = fvrid.real_train_images(corrupt, 3)
    data = ImageDataset(records, strict=False)
    for _epoch in range(3):
        skipped = sum(data[i]["skipped"] for i in range(len(data)))
        assert skipped == 1  # counted every time it is drawn...
    assert opened.count("0200_c1_000.png") == 1  # ...but read once
    assert list(data.unreadable) == [0]


def test_a_dataset_with_nothing_readable_says_so(tmp_path):
    bad = tmp_path / "0001_c1_000.png"
    bad.write_bytes(b"not an image")
    data = ImageDataset([fvrid.ImageRecord(bad, 1, 0), fvrid.ImageRecord(bad, 2, 0)], strict=False)
    with pytest.raises(ImageReadError, match=r"no readable image left.*0001_c1_000\.png"):
        data[0]


def test_test_images_are_never_skipped(corrupt):
    query, gallery = fvrid.load_test_set(corrupt, "REAL_FOGGY")
    truncate(Path(gallery[0].path))
    data = RetrievalDataset(query, gallery)
    with pytest.raises(ImageReadError, match=Path(gallery[0].path).name):
        data[len(query)]


# ----------------------------------------------------------------------------- pre-check


def test_the_fast_check_tells_unreadable_images_apart(corrupt):
    train = required_folders(3, test_sets=())
    report = require_valid_dataset(corrupt, tolerate_unreadable=train)
    assert sorted(p.relative_to(corrupt).as_posix() for p in report.unreadable_in(train)) == sorted(
        [TRUNCATED_CLEAR, RANDOM_HAZY, TRUNCATED_REAL]
    )
    assert len(report.problems) == 3  # `rvsl-data check` still lists them as problems
    truncate(next((corrupt / "FVRID_real/query_foggy").iterdir()))
    with pytest.raises(ValueError, match="query_foggy") as info:
        require_valid_dataset(corrupt, tolerate_unreadable=train)
    assert len(info.value.problems) == 1  # only the test image is fatal


def test_the_fast_check_cannot_see_a_png_cut_inside_its_pixel_data(corrupt):
    path = corrupt / HIDDEN
    cut_pixel_data(path)
    assert path not in check_dataset(corrupt, fast=True).unreadable
    assert path in check_dataset(corrupt, fast=False).unreadable


# ----------------------------------------------------------------------------- the callback


def _fake_module(logged: list[float]) -> SimpleNamespace:
    return SimpleNamespace(device="cpu", log=lambda name, value, **kw: logged.append(value))


def test_the_counter_counts_each_unreadable_file_once_over_parts_steps_and_ranks(caplog):
    batch = {"syn": {"skipped_index": torch.tensor([-1, 4, -1])}, "real": {"skipped_index": [4]}}
    parts = skipped_indices(batch)
    assert {k: v.tolist() for k, v in parts.items()} == {"syn": [-1, 4, -1], "real": [4]}
    assert skipped_indices({"syn": {"pid": torch.zeros(2)}}) == {}
    other_rank = torch.tensor([9, -1, 4, -1])  # real: 9; syn: 4, which this rank met too
    two_ranks = SimpleNamespace(
        world_size=2,
        strategy=SimpleNamespace(all_gather=lambda t: torch.stack([t, other_rank])),
        is_global_zero=True,
        current_epoch=0,
    )
    logged: list[float] = []
    counter = SkippedImagesCounter()
    counter.on_train_epoch_start(two_ranks, None)
    clean = {"syn": {"skipped_index": -torch.ones(3)}, "real": {"skipped_index": [-1]}}
    with caplog.at_level(logging.WARNING, logger="rvsl.data.skip_counter"):
        for b in (batch, clean, batch):
            counter.on_train_batch_end(two_ranks, _fake_module(logged), None, b, 0)
        counter.on_train_epoch_end(two_ranks, None)
    assert logged == [3.0, 3.0, 3.0]  # syn 4, real 4 and real 9: the repeats count once
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # the first skip of the epoch, then the epoch's sum
    assert "3 unreadable" in warnings[0] and "3 of them new (3 in all)" in warnings[1]
    resumed = SkippedImagesCounter()
    resumed.load_state_dict(counter.state_dict())
    assert resumed.total == 3


def test_an_unreadable_file_drawn_every_epoch_counts_once(corrupt):
    data = ImageDataset(fvrid.real_train_images(corrupt, 3), strict=False)
    one_rank = SimpleNamespace(world_size=1, is_global_zero=True, current_epoch=0)
    logged: list[float] = []
    counter = SkippedImagesCounter()
    for _epoch in range(3):
        batch = {"real": default_collate([data[i] for i in range(len(data))])}
        assert int(batch["real"]["skipped"].sum()) == 1
        counter.on_train_batch_end(one_rank, _fake_module(logged), None, batch, 0)
    assert logged == [1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- end to end


def _logged(cfg, key: str) -> list[float]:
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as fh:
        return [float(row[key]) for row in csv.DictReader(fh) if row.get(key)]


def test_a_run_skips_bad_images_counts_them_and_trains_to_the_end(compose_train, corrupt, caplog):
    cfg = compose_train(
        "stage=real_haze",
        f"data.root={corrupt}",
        "trainer.log_every_n_steps=1",
        "trainer.limit_train_batches=2",  # the seed draws bad files into both
        "test_after_fit=false",
    )
    with caplog.at_level(logging.WARNING):
        train(cfg)
    assert "3 unreadable training image(s) will be skipped" in caplog.text  # before training
    assert "0200_c1_000.png" in caplog.text
    counts = _logged(cfg, "data/skipped_images")
    assert counts and counts[-1] > 0 and counts == sorted(counts)  # a running total
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def test_strict_stops_the_run_before_the_first_step_naming_the_file(compose_train, corrupt):
    cfg = compose_train("stage=real_haze", f"data.root={corrupt}", "data.strict=true")
    with pytest.raises(RunConfigError, match=r"(?s)0200_c1_000\.png.*data\.strict=false"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_strict_stops_mid_run_at_a_file_the_fast_check_cannot_see(
    compose_train, tiny_fvrid, tmp_path
):
    root = Path(shutil.copytree(tiny_fvrid, tmp_path / "FVRID"))
    cut_pixel_data(root / HIDDEN)
    cfg = compose_train(
        "stage=real_haze", f"data.root={root}", "data.strict=true", "test_after_fit=false"
    )
    prepare_data(cfg)  # the fast pre-check passes...
    with pytest.raises(ImageReadError, match=r"0008_c1_000\.png.*data\.strict=false"):
        train(cfg)  # ...so the error comes from the training loader
