"""Embedding image files for the search: the checkpoint's network, its image size and
normalisation, a branch choice, through the engine (:mod:`rvsl.inference.engine`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from rvsl.inference import Reidentifier
from rvsl.inference.engine import EmbeddingModule, predict_to_shards, predict_trainer
from rvsl.inference.haze import BRANCH_CHOICES, DEFAULT_BRANCH, DEFAULT_HAZE_THRESHOLD
from rvsl.inference.images import ImageFiles
from rvsl.search.files import SearchInputError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class EmbedOptions:
    """How images are embedded. An index records ``branch`` and ``haze_threshold`` so that its
    queries are embedded the same way."""

    branch: str | None = None  # None: the index's, or DEFAULT_BRANCH for a new one
    haze_threshold: float | None = None  # None: the index's, or DEFAULT_HAZE_THRESHOLD
    device: str = "auto"  # auto = cuda when available
    devices: int = 1  # > 1: DDP, each rank embeds a share
    batch_size: int = 32
    workers: int = 2  # decoding processes
    progress: bool = True

    def __post_init__(self) -> None:
        if self.branch is not None and self.branch not in BRANCH_CHOICES:
            raise SearchInputError(f"--branch must be one of {', '.join(BRANCH_CHOICES)}")
        if self.device not in DEVICES:
            raise SearchInputError(f"--device must be one of {', '.join(DEVICES)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise SearchInputError("--device cuda: CUDA is not available on this machine")
        for name in ("devices", "batch_size"):
            if getattr(self, name) < 1:
                raise SearchInputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.workers < 0:
            raise SearchInputError("--workers must be 0 or more")

    @property
    def accelerator(self) -> str:
        if self.device == "auto":
            return "gpu" if torch.cuda.is_available() else "cpu"
        return "gpu" if self.device == "cuda" else "cpu"


def recorded_embedding(manifest: dict[str, Any], options: EmbedOptions | None) -> EmbedOptions:
    """``options`` with the index's branch choice and haze threshold, on one device: queries
    and calibration images are embedded exactly as the index's images were."""
    return replace(
        options or EmbedOptions(),
        branch=manifest["branch"],
        haze_threshold=manifest["haze_threshold"],
        devices=1,
    )


class Embedder:
    """A checkpoint ready to embed files: ``embed(paths)`` -> features, haze, branch, hashes."""

    def __init__(self, checkpoint: str | os.PathLike[str], options: EmbedOptions) -> None:
        self.options = options
        self.reidentifier = Reidentifier.from_checkpoint(checkpoint)
        self.module = EmbeddingModule(
            self.reidentifier.net.eval(),
            choice=options.branch or DEFAULT_BRANCH,
            normalized_input=self.reidentifier.normalize_input,
            haze_threshold=(
                DEFAULT_HAZE_THRESHOLD if options.haze_threshold is None else options.haze_threshold
            ),
        )
        self._trainer: pl.Trainer | None = None

    @property
    def trainer(self) -> pl.Trainer:
        """One trainer for every call: with DDP the process group starts once."""
        if self._trainer is None:
            self._trainer = predict_trainer(
                self.options.accelerator,
                self.options.devices,
                enable_progress_bar=self.options.progress,
            )
        return self._trainer

    @property
    def is_main(self) -> bool:
        """False on the helper ranks of a multi-device run (they only embed)."""
        return self._trainer is None or self._trainer.is_global_zero

    def embed(
        self, paths: Sequence[str], staging: str | os.PathLike[str] | None = None
    ) -> dict[str, Any] | None:
        """``feature`` (N, D), ``haze`` (N,), ``branch``, ``hash``, ``valid`` (N,) and ``error``
        in the order of ``paths`` (rank 0; None on the others). ``staging`` holds the ranks'
        shards meanwhile (a temporary folder when None)."""
        # Every rank needs at least one image (Lightning's predict sampler insists): a chunk
        # smaller than the world is padded with its last image, cut off again below.
        padded = list(paths) + list(paths[-1:]) * max(0, self.trainer.world_size - len(paths))
        dataset = ImageFiles(
            padded,
            self.reidentifier.transform,
            self.reidentifier.image_size,
            with_hash=True,
        )
        loader = DataLoader(
            dataset,
            batch_size=self.options.batch_size,
            num_workers=self.options.workers,
            persistent_workers=False,
            pin_memory=self.options.accelerator == "gpu",
        )
        try:
            if staging is not None:
                merged = predict_to_shards(self.trainer, self.module, loader, staging)
            else:
                with tempfile.TemporaryDirectory(prefix="rvsl-search-") as folder:
                    merged = predict_to_shards(self.trainer, self.module, loader, Path(folder))
        except SystemExit:
            # Lightning answers Ctrl-C inside predict with sys.exit(1); give it back as what
            # it was, so that the caller can say what is saved.
            if self._trainer is not None and self._trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
        if merged is None or len(padded) == len(paths):
            return merged
        return {key: value[: len(paths)] for key, value in merged.items()}

    def dehaze(self, paths: Sequence[str]) -> torch.Tensor:
        """(N, 3, H, W) dehazed views in [0, 1] of readable files (for the results page)."""
        return self.reidentifier.dehaze(list(paths))
