"""The RVSL LightningDataModule: synthetic PK pairs, plus a cycling real branch in stages 2-3."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, DistributedSampler

from rvsl.data import fvrid
from rvsl.data.datasets import (
    ImageDataset,
    RetrievalDataset,
    SyntheticPairDataset,
    TwinRetrievalDataset,
)
from rvsl.data.loaders import RestartingLoader, ResumableLoader, SeededItems, resolve_pin_memory
from rvsl.data.samplers import PKSampler, PlanSampler, ShuffleSampler
from rvsl.data.transforms import build_eval_transform, build_train_transform

#: the real images each data stage adds (a training stage's number is in its row of
#: rvsl.training.stages.STAGES; the config passes it as data.stage)
REAL_DOMAIN = {1: None, 2: "clear", 3: "hazy"}
REAL_SAMPLING = ("random", "pk")
# what the clear branch embeds on SYN: the hazy test image, or its clear twin (the official way)
SYN_CLEAR_INPUTS = ("hazy", "clear")


def parse_stage(stage: int | str) -> int:
    """The data stage, 1 (synthetic pairs only), 2 (+ real clear) or 3 (+ real hazy)."""
    if str(stage).isdigit() and int(stage) in REAL_DOMAIN:
        return int(stage)
    raise ValueError(
        f"data stage must be 1 (synthetic pairs), 2 (+ real clear) or 3 (+ real hazy), not "
        f"{stage!r}; a training stage's number is rvsl.training.stages.STAGES[name].number"
    )


def check_test_sets(names: Sequence[str]) -> list[str]:
    """``data.test_sets`` in upper case; a name that is not a per-epoch test set is an error."""
    upper = [name.upper() for name in names]
    final_only = [n for n in upper if n in fvrid.FINAL_ONLY_TEST_SETS]
    if final_only:
        raise ValueError(
            f"data.test_sets: {final_only} are held out for the evaluation after fitting, never "
            "validated per epoch; list them in data.final_test_sets"
        )
    unknown = [n for n in upper if n not in fvrid.TEST_SETS]
    if unknown:
        raise ValueError(f"unknown test sets {unknown}; expected names from {fvrid.TEST_SETS}")
    return upper


def check_final_test_sets(names: Sequence[str], test_sets: Sequence[str]) -> list[str]:
    """``data.final_test_sets`` in upper case: known names, none validated per epoch already."""
    upper = [name.upper() for name in names]
    known = fvrid.TEST_SETS | fvrid.FINAL_ONLY_TEST_SETS
    unknown = [n for n in upper if n not in known]
    if unknown:
        raise ValueError(
            f"data.final_test_sets: unknown test sets {unknown}; expected names from {list(known)}"
        )
    twice = [n for n in upper if n in test_sets]
    if twice:
        raise ValueError(
            f"data.final_test_sets: {twice} are in data.test_sets already (validated every epoch)"
        )
    return upper


def require_final_test_set(root: Path, name: str) -> None:
    """A missing folder of a requested final test set, named in one sentence."""
    missing = [str(f) for f in fvrid.test_set_folders(root, name) if not f.is_dir()]
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        raise FileNotFoundError(
            f"data.final_test_sets asks for {name}, but {' and '.join(missing)} {verb} not exist; "
            f"write that test set under data.root or remove {name} from data.final_test_sets"
        )


def _seed(*parts: int) -> int:
    """A generator seed derived from several integers (independent streams per purpose/rank)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


class RVSLDataModule(pl.LightningDataModule):
    """FVRID data for one RVSL training stage, and the query/gallery test sets.

    Training batches: stage 1 gets ``{"syn": batch}``; stages 2-3 get
    ``{"syn": batch, "real": batch}`` from a ``CombinedLoader`` in ``min_size`` mode whose real
    branch is a :class:`RestartingLoader`, so an epoch is exactly one pass over the synthetic
    loader while the real loader cycles with a fresh shuffle each pass. A synthetic batch is
    ``dict(clear, hazy, pid, camid, index, skipped)`` with P identities x K instances; a real
    batch is ``dict(image, pid, camid, index, path, skipped)`` where ``pid`` is a hidden label
    the method must not use (it only drives ``real_sampling="pk"``). ``skipped`` and
    ``skipped_index`` mark items that replace an unreadable image (``strict``; see datasets),
    counted once per file in the logs by ``SkippedImagesCounter``.

    Distributed training: build the Trainer with ``use_distributed_sampler=False``. The PK
    sampler is DDP-aware itself (world size and rank from ``self.trainer``, else 1 and 0): ranks
    get disjoint identities and equal batch counts. Lightning's fit loop calls ``set_epoch`` on
    every training DataLoader's sampler at the start of each epoch, which reshuffles the PK plan;
    nothing else is needed. Real batches are drawn independently per rank. Validation loaders
    are sharded with ``DistributedSampler(shuffle=False)`` when world size > 1, which pads with
    repeated images: drop repeats by the item's ``index``.

    Resuming: the training loaders are :class:`ResumableLoader` (synthetic) and a
    :class:`RestartingLoader` over one (real), whose places Lightning saves in every
    checkpoint and restores on a mid-epoch resume; their samplers' orders are functions of
    (seed, epoch, rank), and every item is augmented from its own seed (:class:`SeededItems`),
    so a resumed run reads the batches, pixels included, of an uninterrupted one, with any
    ``num_workers``. The global random states are ``LastCheckpoint``'s.

    Args:
        root: folder holding FVRID_syn / FVRID_clear / FVRID_real.
        stage: 1 (synthetic pairs only), 2 (+ real clear images) or 3 (+ real hazy images).
        image_size: training and test size (H, W).
        num_instances: K, images per identity in a synthetic batch.
        batch_size: synthetic pairs per batch and rank, P identities x K instances.
        real_batch_size: images per real batch, per rank (a multiple of K when real_sampling="pk").
        real_sampling: "random" (uniform, default) or "pk" (groups by the hidden labels).
        test_sets: names among SYN, REAL_CLEAR, REAL_FOGGY; one val loader each, in order,
            evaluated at every validation epoch (curves; never used to select a model).
        val_identities: N > 0 holds N synthetic training identities out of training (the same
            ones in every stage, drawn from ``seed``) and validates on their hazy twins as the
            first val set, ``VAL`` (see ``fvrid.split_syn_train``); 0: no validation split.
        final_test_sets: sets evaluated only after fitting (:meth:`add_final_test_sets`),
            never per epoch: the optional REAL_HELDOUT, or any of the test sets above.
        num_workers, pin_memory: DataLoader settings.
        seed: seeds the samplers (same on all ranks).
        eval_batch_size: batch size of the val/test loaders.
        scale_range, flip_p, erase_p, normalize: train augmentation (see transforms).
        erase_fill ("zero" | "mean"), erase_ratio_sampling ("log_uniform" | "uniform"),
            erase_attempts, scale_jitter ("shared" | "per_axis"): the defaults are torchvision's
            erasing and one shared zoom factor; "mean", "uniform", 100 and "per_axis" are the
            reference's augmentation (see ``build_train_transform``).
        strict: False (default): an unreadable training image is skipped with a warning and
            replaced by another image of its identity, counted in the items' ``skipped``;
            True: it raises at once. Test images are never skipped (see datasets).
        syn_clear_input: what the clear branch embeds on the SYN test set: "hazy" (default,
            the hazy test image, like the hazy branch) or "clear" (its clear twin, as the
            official evaluation does); SYN items then carry the twin as ``clear``.
    """

    def __init__(
        self,
        root: str | Path,
        stage: int | str = 1,
        image_size: Sequence[int] = (384, 384),
        num_instances: int = 6,
        batch_size: int = 36,
        real_batch_size: int = 18,
        real_sampling: str = "random",
        test_sets: Sequence[str] = ("SYN", "REAL_CLEAR", "REAL_FOGGY"),
        num_workers: int = 4,
        pin_memory: bool | str = "auto",
        seed: int = 0,
        eval_batch_size: int = 64,
        scale_range: Sequence[float] = (1.0, 1.2),
        flip_p: float = 0.5,
        erase_p: float = 0.5,
        normalize: bool = False,
        erase_fill: str = "zero",
        erase_ratio_sampling: str = "log_uniform",
        erase_attempts: int = 10,
        scale_jitter: str = "shared",
        strict: bool = False,
        syn_clear_input: str = "hazy",
        val_identities: int = 0,
        final_test_sets: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.train_stage = parse_stage(stage)
        self.image_size = tuple(int(s) for s in image_size)
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {image_size}")
        if real_sampling not in REAL_SAMPLING:
            raise ValueError(f"real_sampling must be one of {REAL_SAMPLING}, got {real_sampling!r}")
        if syn_clear_input not in SYN_CLEAR_INPUTS:
            raise ValueError(
                f"data.syn_clear_input must be one of {SYN_CLEAR_INPUTS}, got {syn_clear_input!r}"
            )
        if real_sampling == "pk" and real_batch_size % num_instances:
            raise ValueError(
                f"real_batch_size ({real_batch_size}) must be a multiple of num_instances "
                f"({num_instances}) when real_sampling='pk'"
            )
        self.test_set_names = check_test_sets(test_sets)
        self.final_test_set_names = check_final_test_sets(final_test_sets, self.test_set_names)
        if int(val_identities) < 0:
            raise ValueError(f"data.val_identities={val_identities}: give 0 (none) or more")
        self.val_identities = int(val_identities)
        #: the sets validated now, in loader order: VAL first, then the test sets
        self.val_set_names = [fvrid.VAL_SET] * bool(self.val_identities) + self.test_set_names
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(
                f"data.batch_size ({batch_size}) must be a positive multiple of "
                f"data.num_instances ({num_instances}): a batch is P identities x K instances"
            )
        self.num_instances = int(num_instances)
        self.batch_size = int(batch_size)
        self.ids_per_batch = self.batch_size // self.num_instances
        self.real_batch_size = int(real_batch_size)
        self.real_sampling = real_sampling
        self.num_workers = int(num_workers)
        self.pin_memory = resolve_pin_memory(pin_memory)
        self.seed = int(seed)
        self.eval_batch_size = int(eval_batch_size)
        self.strict = bool(strict)
        self.syn_clear_input = syn_clear_input
        self.train_transform = build_train_transform(
            self.image_size,
            scale_range,
            flip_p,
            erase_p,
            normalize=normalize,
            erase_fill=erase_fill,
            erase_ratio_sampling=erase_ratio_sampling,
            erase_attempts=erase_attempts,
            scale_jitter=scale_jitter,
        )
        self.eval_transform = build_eval_transform(self.image_size, normalize=normalize)
        # in checkpoints (inference reads image_size and normalize); the run logs its whole
        # config itself, so the loggers get no flat copy whose `stage` (1/2/3) would mask its own
        self.save_hyperparameters(logger=False)

        self.syn_split: fvrid.SyntheticSplit | None = None
        self.syn_train: SyntheticPairDataset | None = None
        self.real_train: ImageDataset | None = None
        self.val_sets: list[RetrievalDataset] | None = None  # one per val_set_names
        self._eval_sets: dict[str, RetrievalDataset] = {}

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Parse the folders this run needs (``stage`` is Lightning's: fit / validate / test)."""
        if stage in (None, "fit"):
            self._setup_train()
            self.require_final_test_sets()
            for name in self.final_test_set_names:  # parsed now: bad names fail before training
                self._eval_set(name)
        self.val_sets = [self._eval_set(name) for name in self.val_set_names]

    def require_final_test_sets(self) -> None:
        """Every folder of ``final_test_sets``, or a FileNotFoundError naming the missing one."""
        for name in self.final_test_set_names:
            require_final_test_set(self.root, name)

    def add_final_test_sets(self) -> None:
        """Validate on ``final_test_sets`` too from now on: for the evaluation after fitting."""
        self.val_set_names += [n for n in self.final_test_set_names if n not in self.val_set_names]
        self.val_sets = None

    def _eval_set(self, name: str) -> RetrievalDataset:
        """One val set, parsed once: VAL, a test set, or a final test set."""
        if name not in self._eval_sets:
            self._eval_sets[name] = self._read_eval_set(name)
        return self._eval_sets[name]

    def _read_eval_set(self, name: str) -> RetrievalDataset:
        """SYN's items carry the clear twins when ``syn_clear_input="clear"``."""
        if name == fvrid.VAL_SET:
            split = self._split()
            return RetrievalDataset(split.val_query, split.val_gallery, self.eval_transform)
        if name == "SYN" and self.syn_clear_input == "clear":
            return TwinRetrievalDataset(*fvrid.syn_test_pairs(self.root), self.eval_transform)
        return RetrievalDataset(*fvrid.load_test_set(self.root, name), self.eval_transform)

    def _split(self) -> fvrid.SyntheticSplit:
        """The synthetic training pairs and the VAL identities held out of them."""
        if self.syn_split is None:
            seed = _seed(self.seed, 4)
            self.syn_split = fvrid.split_syn_train(self.root, self.val_identities, seed)
        return self.syn_split

    def _setup_train(self) -> None:
        if self.syn_train is None:
            pairs = self._split().train
            self.syn_train = SyntheticPairDataset(pairs, self.train_transform, self.strict)
        if self.train_stage > 1 and self.real_train is None:
            records = fvrid.real_train_images(self.root, self.train_stage)
            self.real_train = ImageDataset(records, self.train_transform, self.strict)

    @property
    def num_classes(self) -> int:
        """Number of synthetic training identities, VAL's held-out ones excluded (parses the
        training folder if needed)."""
        self._setup_train()
        assert self.syn_train is not None
        return len(set(self.syn_train.pids))

    def _world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return int(self.trainer.world_size), int(self.trainer.global_rank)
        return 1, 0

    def _epoch(self) -> int:
        return int(self.trainer.current_epoch) if self.trainer is not None else 0

    def _train_loader(
        self, dataset: Any, batch_size: int, sampler: PlanSampler, stream: int
    ) -> ResumableLoader:
        """A resumable loader of per-item-seeded items; its own generator draws the worker
        base seeds, so creating its iterators leaves torch's global generator alone."""
        rank = self._world()[1]
        return ResumableLoader(
            SeededItems(dataset),
            batch_size=batch_size,
            sampler=sampler,
            drop_last=True,
            generator=torch.Generator().manual_seed(_seed(self.seed, 3, stream, rank)),
            **self._worker_options(),
        )

    def _loader(self, dataset: Any, batch_size: int, sampler: Any, drop_last: bool) -> DataLoader:
        options = self._worker_options()
        return DataLoader(dataset, batch_size, sampler=sampler, drop_last=drop_last, **options)

    def _worker_options(self) -> dict[str, Any]:
        """How every loader of this datamodule decodes: workers, pinning, kept-alive workers."""
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
        }

    # ---------------------------------------------------------------- loaders
    def syn_dataloader(self) -> ResumableLoader:
        """Synthetic pairs in PK batches of ``ids_per_batch * num_instances``."""
        self._setup_train()
        world, rank = self._world()
        sampler = PKSampler(
            self.syn_train.pids,
            self.num_instances,
            self.batch_size,
            self.seed,
            world,
            rank,
            item_seed=_seed(self.seed, 2, 0, rank),
        )
        sampler.set_epoch(self._epoch())
        return self._train_loader(self.syn_train, self.batch_size, sampler, stream=0)

    def real_dataloader(self) -> ResumableLoader:
        """One pass over the real training images of stage 2 or 3 (uniform random by default)."""
        self._setup_train()
        if self.real_train is None:
            raise RuntimeError("stage 1 has no real training branch")
        world, rank = self._world()
        item_seed = _seed(self.seed, 2, 1, rank)
        sampler: PlanSampler
        if self.real_sampling == "pk":
            sampler = PKSampler(
                self.real_train.pids,
                self.num_instances,
                self.real_batch_size,
                _seed(self.seed, 1),
                world,
                rank,
                item_seed=item_seed,
            )
        else:
            sampler = ShuffleSampler(len(self.real_train), _seed(self.seed, 1, rank), item_seed)
        return self._train_loader(self.real_train, self.real_batch_size, sampler, stream=1)

    def train_dataloader(self) -> dict[str, DataLoader] | CombinedLoader:
        if self.train_stage == 1:
            return {"syn": self.syn_dataloader()}
        real = RestartingLoader(self.real_dataloader(), epoch=self._epoch)
        return CombinedLoader({"syn": self.syn_dataloader(), "real": real}, mode="min_size")

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per val set (order of ``val_set_names``), queries then gallery."""
        if self.val_sets is None:
            self.setup("validate")
        assert self.val_sets is not None
        world, rank = self._world()
        loaders = []
        for dataset in self.val_sets:
            sampler = None
            if world > 1:
                sampler = DistributedSampler(dataset, world, rank, shuffle=False, drop_last=False)
            loaders.append(self._loader(dataset, self.eval_batch_size, sampler, drop_last=False))
        return loaders

    def syn_test_pairs_dataloader(self) -> DataLoader:
        """The SYN test images (query + gallery) with their clear twins, for dehazing quality."""
        query, gallery = fvrid.syn_test_pairs(self.root)
        dataset = SyntheticPairDataset([*query, *gallery], self.eval_transform)
        return self._loader(dataset, self.eval_batch_size, None, drop_last=False)

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()
