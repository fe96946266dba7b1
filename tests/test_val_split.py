"""The validation split VAL: training identities held out, their hazy twins as a retrieval set.

And the final test sets (data.final_test_sets): evaluated only after fitting, never per epoch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest_data import make_fvrid, write_split
from rvsl.data import fvrid
from rvsl.data.datamodule import RVSLDataModule
from rvsl.data.fvrid import PairRecord, choose_val_identities, val_retrieval_set
from rvsl.training.stages import STAGES

SYN_IDS = (3, 5, 8, 13, 21, 34)
TEST_SETS = ["SYN", "REAL_CLEAR", "REAL_FOGGY"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fvrid(tmp_path_factory.mktemp("fvrid") / "FVRID", syn_ids=SYN_IDS)


@pytest.fixture(scope="module")
def root_with_heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree that also holds the optional REAL_HELDOUT test set."""
    root = make_fvrid(tmp_path_factory.mktemp("fvrid_heldout") / "FVRID")
    write_split(root / "FVRID_heldout" / "query_foggy", (50, 51, 52), 1, seed=11)
    write_split(root / "FVRID_heldout" / "gallery_foggy", (50, 51, 52), 2, seed=12)
    return root


def datamodule(root: Path, **kwargs: object) -> RVSLDataModule:
    dm = RVSLDataModule(root, image_size=(32, 16), num_workers=0, seed=1229, **kwargs)
    dm.setup("fit")
    return dm


def pids(records) -> set[int]:
    return {r.pid for r in records}


def original_train_pids(dm: RVSLDataModule) -> set[int]:
    """The FVRID pids (before relabelling) of the training pairs, read from the file names."""
    return {fvrid.parse_name(p.clear_path.name)[0] for p in dm.syn_train.pairs}


def pair(pid: int, cam: int, n: int = 0) -> PairRecord:
    name = f"{pid:04d}_c{cam + 1}_{n:03d}.png"
    return PairRecord(Path("clear") / name, Path("hazy") / name, pid, cam)


# ------------------------------------------------------------------ the split
def test_val_identities_leave_training_and_the_classifier_shrinks_by_n(root: Path) -> None:
    whole = datamodule(root)
    split = datamodule(root, val_identities=2)
    held = pids(split.syn_split.val_query)
    assert len(held) == 2 and held <= set(SYN_IDS)
    assert split.num_classes == whole.num_classes - 2 == len(SYN_IDS) - 2
    assert original_train_pids(split) == set(SYN_IDS) - held
    assert sorted(set(split.syn_train.pids)) == list(range(split.num_classes))  # relabelled


def test_val_is_disjoint_from_training_and_from_every_test_set(root: Path) -> None:
    dm = datamodule(root, val_identities=3)
    val = dm.syn_split.val_pids
    assert val.isdisjoint(original_train_pids(dm))
    for name in fvrid.TEST_SETS:
        query, gallery = fvrid.load_test_set(root, name)
        assert val.isdisjoint(pids(query) | pids(gallery)), name


def test_val_queries_are_one_camera_of_each_identity_and_the_gallery_the_others(
    root: Path,
) -> None:
    split = datamodule(root, val_identities=2).syn_split
    for pid in split.val_pids:
        query_cams = {r.camid for r in split.val_query if r.pid == pid}
        gallery_cams = {r.camid for r in split.val_gallery if r.pid == pid}
        assert len(query_cams) == 1 and gallery_cams and query_cams.isdisjoint(gallery_cams)


def test_val_reads_the_hazy_synthetic_twins(root: Path) -> None:
    split = datamodule(root, val_identities=2).syn_split
    folders = {r.path.parent for r in (*split.val_query, *split.val_gallery)}
    assert folders == {root / "FVRID_syn" / "train_foggy"}


def test_the_same_identities_are_held_out_in_every_stage_and_for_the_baseline(root: Path) -> None:
    held = [
        datamodule(root, stage=stage.number, val_identities=2).syn_split.val_pids
        for stage in STAGES.values()
    ]
    assert all(h == held[0] for h in held)


def test_the_held_out_identities_follow_the_seed_and_nest_as_n_grows() -> None:
    pairs = [pair(pid, cam) for pid in range(40) for cam in (0, 1)]
    five = choose_val_identities(pairs, 5, seed=7)
    assert choose_val_identities(pairs, 5, seed=7) == five
    assert set(five) < set(choose_val_identities(pairs, 10, seed=7))
    assert any(choose_val_identities(pairs, 5, seed=s) != five for s in range(1, 4))


def test_identities_seen_by_one_camera_are_never_held_out() -> None:
    pairs = [pair(1, 0), pair(1, 0, 1), pair(2, 0), pair(2, 1), pair(3, 1), pair(3, 2)]
    assert choose_val_identities(pairs, 2, seed=0) == [2, 3]
    with pytest.raises(ValueError, match=r"data.val_identities=3: only 2 of the 4 .* cameras"):
        choose_val_identities([*pairs, pair(4, 0), pair(4, 0, 1)], 3, seed=0)


def test_holding_out_every_training_identity_is_refused(root: Path) -> None:
    with pytest.raises(ValueError, match=r"data.val_identities=6 would hold out all 6"):
        datamodule(root, val_identities=6)


def test_val_retrieval_set_puts_the_lowest_camera_first_as_queries() -> None:
    query, gallery = val_retrieval_set([pair(9, 2), pair(9, 1), pair(9, 1, 1), pair(9, 0)])
    assert [r.camid for r in query] == [0]
    assert sorted(r.camid for r in gallery) == [1, 1, 2]
    assert all(r.path.parent == Path("hazy") for r in (*query, *gallery))


def test_val_is_the_first_val_set_and_validated_every_epoch(root: Path) -> None:
    dm = datamodule(root, val_identities=2)
    assert dm.val_set_names == ["VAL", *TEST_SETS]
    loaders = dm.val_dataloader()
    assert len(loaders) == 4
    val = loaders[0].dataset
    assert len(val) == len(dm.syn_split.val_query) + len(dm.syn_split.val_gallery)


def test_without_val_identities_there_is_no_val_set(root: Path) -> None:
    dm = datamodule(root)
    assert dm.val_set_names == TEST_SETS and dm.syn_split.val_query == []


# ------------------------------------------------------------------ final test sets
def test_a_final_test_set_is_evaluated_only_after_fitting(root_with_heldout: Path) -> None:
    dm = datamodule(root_with_heldout, val_identities=1, final_test_sets=["real_heldout"])
    assert dm.val_set_names == ["VAL", *TEST_SETS]  # per epoch: never REAL_HELDOUT
    assert len(dm.val_dataloader()) == 4
    dm.add_final_test_sets()
    assert dm.val_set_names == ["VAL", *TEST_SETS, "REAL_HELDOUT"]
    heldout = dm.val_dataloader()[-1].dataset
    assert {r.path.parent.name for r in heldout.records} == {"query_foggy", "gallery_foggy"}
    assert {r.path.parent.parent.name for r in heldout.records} == {"FVRID_heldout"}


def test_a_missing_final_test_set_is_named_in_one_sentence(root: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        datamodule(root, final_test_sets=["REAL_HELDOUT"])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("data.final_test_sets asks for REAL_HELDOUT, but ")
    assert str(root / "FVRID_heldout" / "query_foggy") in message


def test_the_held_out_haze_is_never_a_per_epoch_test_set(root: Path) -> None:
    with pytest.raises(ValueError, match=r"list them in data\.final_test_sets"):
        RVSLDataModule(root, test_sets=["SYN", "REAL_HELDOUT"])
    with pytest.raises(ValueError, match=r"\['SYN'\] are in data\.test_sets already"):
        RVSLDataModule(root, test_sets=["SYN"], final_test_sets=["SYN"])
    with pytest.raises(ValueError, match=r"data\.final_test_sets: unknown test sets"):
        RVSLDataModule(root, final_test_sets=["FOG"])
