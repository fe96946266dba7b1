"""RVSLDataModule: per-stage batches, epoch = one synthetic pass, fresh real passes, DDP wiring."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DistributedSampler

from conftest_data import make_fvrid
from rvsl.data.datamodule import RestartingLoader, RVSLDataModule, parse_stage
from rvsl.data.datasets import ImageDataset, SyntheticPairDataset
from rvsl.data.fvrid import ImageRecord, PairRecord
from rvsl.data.samplers import PKSampler
from rvsl.data.transforms import ImageReadError

H, W = 16, 8
K, P = 2, 2


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fvrid(tmp_path_factory.mktemp("fvrid"))


def make_dm(root: Path, stage: int | str = 1, **kw: object) -> RVSLDataModule:
    args: dict = dict(
        image_size=(H, W),
        num_instances=K,
        batch_size=P * K,
        real_batch_size=4,
        num_workers=0,
        eval_batch_size=5,
        seed=0,
    )
    args.update(kw)
    dm = RVSLDataModule(root, stage=stage, **args)
    dm.setup("fit")
    return dm


def combined_batches(loader: CombinedLoader) -> list[dict]:
    return [batch for batch, _, _ in loader]


def test_the_data_stage_is_a_number_and_a_stage_name_is_refused_with_where_to_find_it():
    assert [parse_stage(s) for s in (1, "2", 3)] == [1, 2, 3]
    with pytest.raises(ValueError, match=r"1 \(synthetic pairs\).*STAGES\[name\]\.number"):
        parse_stage("real_haze")  # the training stage table owns the names
    with pytest.raises(ValueError, match="data stage"):
        parse_stage(4)


def test_constructor_rejects_bad_settings(root: Path) -> None:
    with pytest.raises(ValueError, match="real_sampling"):
        RVSLDataModule(root, real_sampling="balanced")
    with pytest.raises(ValueError, match="multiple of num_instances"):
        RVSLDataModule(root, real_sampling="pk", real_batch_size=5, num_instances=2)
    with pytest.raises(ValueError, match="unknown test sets"):
        RVSLDataModule(root, test_sets=["SYN", "FOG"])


def test_stage1_setup_and_one_synthetic_batch(root: Path) -> None:
    dm = make_dm(root, stage=1)
    assert dm.num_classes == 6
    loaders = dm.train_dataloader()
    assert isinstance(loaders, dict) and list(loaders) == ["syn"]
    batch = next(iter(loaders["syn"]))
    assert batch["clear"].shape == batch["hazy"].shape == (P * K, 3, H, W)
    assert batch["clear"].dtype == torch.float32 and type(batch["clear"]) is torch.Tensor
    assert batch["pid"].shape == batch["camid"].shape == batch["index"].shape == (P * K,)
    labels = batch["pid"].view(P, K)
    assert (labels == labels[:, :1]).all() and len(set(labels[:, 0].tolist())) == P
    assert int(batch["pid"].max()) < dm.num_classes


def test_num_classes_is_available_before_setup(root: Path) -> None:
    assert RVSLDataModule(root, num_workers=0).num_classes == 6


@pytest.mark.parametrize(("stage", "folder"), [(2, "train_clear"), (3, "train_foggy")])
def test_real_stages_combine_a_synthetic_and_a_real_batch(
    root: Path, stage: int, folder: str
) -> None:
    dm = make_dm(root, stage=stage)
    loader = dm.train_dataloader()
    assert isinstance(loader, CombinedLoader)
    batch = combined_batches(loader)[0]
    assert set(batch) == {"syn", "real"}
    assert batch["syn"]["clear"].shape == (P * K, 3, H, W)
    real = batch["real"]
    assert real["image"].shape == (4, 3, H, W)
    assert all(Path(p).parent.name == folder for p in real["path"])


@pytest.mark.parametrize("real_batch_size", [1, 12])  # real loader longer / shorter than syn
@pytest.mark.parametrize("stage", [2, 3])
def test_epoch_is_one_pass_over_the_synthetic_loader(
    root: Path, stage: int, real_batch_size: int
) -> None:
    dm = make_dm(root, stage=stage, real_batch_size=real_batch_size)
    syn_len = len(dm.syn_dataloader())
    real_len = len(dm.real_dataloader())
    assert real_len != syn_len
    loader = dm.train_dataloader()
    iter(loader)
    assert len(loader) == syn_len
    assert len(combined_batches(loader)) == syn_len
    assert len(combined_batches(loader)) == syn_len  # and again next epoch


def test_real_loader_restarts_with_a_fresh_shuffle(root: Path) -> None:
    dm = make_dm(root, stage=2, real_batch_size=4)
    real_len = len(dm.real_dataloader())  # 12 real clear images -> 3 batches
    loader = dm.train_dataloader()  # 6 synthetic batches -> two real passes per epoch
    assert len(dm.syn_dataloader()) == 2 * real_len
    order = torch.cat([b["real"]["index"] for b in combined_batches(loader)]).tolist()
    first, second = order[: 4 * real_len], order[4 * real_len :]
    assert sorted(first) == sorted(second) == list(range(12))  # each pass covers the set once
    assert first != second


def test_restarting_loader_sets_the_pass_number_on_a_pk_sampler() -> None:
    sampler = PKSampler([0, 0, 1, 1, 2, 2], 2, 2)
    loader = torch.utils.data.DataLoader(list(range(6)), batch_size=2, sampler=sampler)
    stream = iter(RestartingLoader(loader))
    passes = [[next(stream).tolist() for _ in range(3)] for _ in range(4)]
    assert sampler.epoch == 3
    assert len({str(p) for p in passes}) > 1


def test_real_pk_sampling_groups_by_hidden_label(root: Path) -> None:
    dm = make_dm(root, stage=3, real_sampling="pk", real_batch_size=4)
    real = combined_batches(dm.train_dataloader())[0]["real"]
    labels = real["pid"].view(2, K)
    assert (labels == labels[:, :1]).all() and labels[0, 0] != labels[1, 0]


def test_samplers_take_world_size_rank_and_epoch_from_the_trainer(root: Path) -> None:
    dm = make_dm(root, stage=2, test_sets=["SYN"], batch_size=K, real_sampling="pk")
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1, current_epoch=3)
    syn = dm.syn_dataloader().sampler
    assert (syn.num_replicas, syn.rank, syn.epoch) == (2, 1, 3)
    real = dm.real_dataloader().sampler
    assert (real.num_replicas, real.rank) == (2, 1)
    (val,) = dm.val_dataloader()
    assert isinstance(val.sampler, DistributedSampler)
    assert (val.sampler.num_replicas, val.sampler.rank) == (2, 1)


def test_val_loaders_follow_test_set_order_with_queries_first(root: Path) -> None:
    dm = RVSLDataModule(
        root, image_size=(H, W), num_workers=0, eval_batch_size=100,
        test_sets=["REAL_FOGGY", "syn"],
    )  # fmt: skip
    dm.setup("validate")
    assert dm.val_set_names == ["REAL_FOGGY", "SYN"]
    loaders = dm.val_dataloader()
    assert len(loaders) == 2
    foggy, syn = (next(iter(loader)) for loader in loaders)
    assert foggy["image"].shape == (3 + 6, 3, H, W)
    assert foggy["is_query"].tolist() == [True] * 3 + [False] * 6
    assert all("FVRID_real" in p for p in foggy["path"])
    assert syn["is_query"].sum() == 3 and all("foggy" in p for p in syn["path"])
    assert foggy["index"].tolist() == list(range(9))


def test_missing_real_folder_is_reported_at_setup(tmp_path: Path) -> None:
    root = make_fvrid(tmp_path)
    for p in sorted((root / "FVRID_real" / "train_foggy").iterdir()):
        p.unlink()
    (root / "FVRID_real" / "train_foggy").rmdir()
    dm = RVSLDataModule(root, stage=3, test_sets=[], num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"FVRID_real/train_foggy"):
        dm.setup("fit")


def test_corrupt_image_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "0001_c1_bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ImageReadError, match=r"0001_c1_bad\.jpg"):
        ImageDataset([ImageRecord(bad, 1, 0)])[0]
    with pytest.raises(ImageReadError, match=r"0001_c1_bad\.jpg"):
        SyntheticPairDataset([PairRecord(bad, bad, 1, 0)])[0]


class _Recorder(pl.LightningModule):
    """Records the synthetic indices of every training batch; learns nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch: dict, batch_idx: int) -> None:
        self.seen.setdefault(self.current_epoch, []).extend(batch["syn"]["index"].tolist())

    def configure_optimizers(self) -> None:
        return None


@pytest.mark.parametrize("stage", [1, 3])
def test_fit_reshuffles_the_pk_plan_every_epoch(root: Path, stage: int) -> None:
    dm = make_dm(root, stage=stage, test_sets=[])
    model = _Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    sampler = PKSampler(dm.syn_train.pids, K, P * K, seed=0)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        assert model.seen[epoch] == list(sampler)
    assert model.seen[0] != model.seen[1]
    assert len(model.seen[0]) == len(sampler) == len(np.unique(model.seen[0]))
