"""Evaluate a network on the query/gallery test sets: features, rankings, metrics, pictures.

The protocol (docs/method.md): every test image goes through the requested branches (clear and
hazy encoders), post-BNNeck features, Euclidean distance, same-identity same-camera gallery
images removed, queries without a true match skipped; mAP, CMC rank-1/5/10 and mINP per
(test set, branch), and SSIM/PSNR of the dehazer on SYN. Options a ReID user expects are in
:class:`EvalOptions` (flip test-time augmentation, cosine distance, feature normalisation,
k-reciprocal re-ranking).

Metrics are fractions in [0, 1] everywhere in code, in ``results.json`` and in the logged
``test/...`` values; only :func:`results_table`, written for a person, shows percent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from rvsl.data.datamodule import RVSLDataModule
from rvsl.evaluation.features import (
    EvaluationError,
    SplitFeatures,
    extract_features,
    extract_features_on,
)
from rvsl.evaluation.pictures import dehazing_picture, first_images, rank_list_picture, save_png
from rvsl.metrics.distance import METRICS, pairwise_distance
from rvsl.metrics.rank import evaluate_rank
from rvsl.metrics.rerank import k_reciprocal_rerank
from rvsl.metrics.restoration import check_restoration, dehazing_quality
from rvsl.models.rvsl_net import BRANCHES, RVSLNet
from rvsl.utils.files import atomic_write
from rvsl.utils.run_folder import claim_features_file

REID_METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")  # fractions in [0, 1]
PICTURE_IMAGES = 8  # images in a dehazing panel


def percent(fraction: float) -> float:
    """A metric as a person reads it (tables, reports, charts, log lines): percent, or mAP
    points for a difference of two. Everywhere else metrics stay fractions in [0, 1]."""
    return 100 * fraction


@dataclass(frozen=True)
class EvalOptions:
    """How to embed and rank. ``branches[0]`` is reported first (tables, pictures)."""

    branches: tuple[str, ...] = BRANCHES
    metric: str = "euclidean"
    normalize: bool = False
    flip: bool = False
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    max_rank: int = 50
    restoration_metrics: str = "standard"  # SSIM/PSNR arithmetic: standard | reference

    def __post_init__(self) -> None:
        branches = tuple(self.branches)
        object.__setattr__(self, "branches", branches)
        bad = [b for b in branches if b not in BRANCHES]
        if not branches or bad or len(set(branches)) != len(branches):
            raise EvaluationError(
                f"eval.branches must list distinct names from {BRANCHES}, got {list(branches)}"
            )
        if self.metric not in METRICS:
            raise EvaluationError(f"eval.metric must be one of {METRICS}, got {self.metric!r}")
        if self.max_rank < 10:
            raise EvaluationError(f"eval.max_rank must be at least 10, got {self.max_rank}")
        try:
            check_restoration(self.restoration_metrics, "eval.restoration_metrics")
        except ValueError as err:
            raise EvaluationError(str(err)) from None


def distance_matrix(split: SplitFeatures, branch: str, options: EvalOptions) -> torch.Tensor:
    """(num_query, num_gallery) distances of one branch, re-ranked if ``options.rerank``."""
    feats = split.features[branch]
    query, gallery = feats[split.query], feats[split.gallery]
    if options.rerank:
        if options.normalize:
            query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
        return k_reciprocal_rerank(
            query,
            gallery,
            k1=options.k1,
            k2=options.k2,
            lambda_value=options.lambda_value,
            metric=options.metric,
        )
    return pairwise_distance(query, gallery, options.metric, options.normalize)


def rank_split(
    split: SplitFeatures, branch: str, options: EvalOptions, name: str = "test set"
) -> tuple[dict[str, float], torch.Tensor]:
    """ReID metrics (:data:`REID_METRICS`, fractions in [0, 1], and the image counts) of one
    branch on one split, and the distance matrix they rank."""
    num_query, num_gallery = len(split.query), len(split.gallery)
    if num_query == 0 or num_gallery == 0:
        raise EvaluationError(
            f"{name} has {num_query} query and {num_gallery} gallery images; both are needed"
        )
    distmat = distance_matrix(split, branch, options)
    q, g = split.query, split.gallery
    try:
        result = evaluate_rank(
            distmat,
            split.pids[q],
            split.pids[g],
            split.camids[q],
            split.camids[g],
            max_rank=options.max_rank,
        )
    except ValueError as err:
        raise EvaluationError(f"{name}: {err}") from err
    cmc = result["cmc"]
    metrics = {
        "mAP": result["mAP"],
        "rank1": float(cmc[0]),
        "rank5": float(cmc[4]),
        "rank10": float(cmc[9]),
        "mINP": result["mINP"],
        "num_query": num_query,
        "num_gallery": num_gallery,
        "num_valid_queries": int(result["num_valid_queries"]),
    }
    return metrics, distmat


def rank_lists_of(
    net: RVSLNet,
    datamodule: RVSLDataModule,
    test_set: str,
    branch: str = "hazy",
    num_queries: int = 6,
    top_k: int = 10,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The rank-list picture of the first ``num_queries`` queries of one of ``datamodule``'s
    validation sets through one branch (Euclidean distances of post-BNNeck features)."""
    loader = datamodule.val_dataloader()[datamodule.val_set_names.index(test_set)]
    split = extract_features(net, loader, (branch,), device)
    features = split.features[branch]
    distmat = pairwise_distance(features[split.query[:num_queries]], features[split.gallery])
    return rank_list_picture(loader.dataset, split, distmat, num_queries, top_k)


def evaluate(
    net: RVSLNet,
    datamodule: RVSLDataModule,
    options: EvalOptions = EvalOptions(),
    device: str | torch.device = "cpu",
    out_dir: str | Path | None = None,
    num_picture_queries: int = 8,
    export_features: str | Path | None = None,
    trainer: pl.Trainer | None = None,
    shard_dir: str | Path | None = None,
) -> dict[str, Any] | None:
    """Metrics of every test set of ``datamodule`` and both branches; pictures into ``out_dir``.

    Returns ``{"options": ..., "syn_clear_input": ..., "test_sets": {SET: {branch: metrics,
    "dehaze": {...}}}, "pictures": [paths]}``, the metrics as :func:`rank_split` gives them
    (fractions in [0, 1]). ``export_features`` writes (atomically) an ``.npz`` with, per test
    set, ``{SET}_{branch}_features``, ``{SET}_pids``, ``{SET}_camids``, ``{SET}_is_query`` and
    ``{SET}_paths``; its path is ``results["features"]``.

    With a multi-device ``trainer`` the embedding runs on all its ranks (shards in
    ``shard_dir``); rank 0 ranks, draws and returns the results, the other ranks return None.
    """
    if trainer is not None and shard_dir is None:
        raise ValueError("evaluate: a trainer needs a shard_dir its ranks can all write to")
    datamodule.setup("test")
    results: dict[str, Any] = {
        "options": asdict(options),
        "syn_clear_input": datamodule.syn_clear_input,  # what SYN's clear branch embedded
        "test_sets": {},
        "pictures": [],
    }
    exported: dict[str, np.ndarray] = {}
    pictures_dir = Path(out_dir) / "pictures" if out_dir is not None else None
    for name, loader in zip(datamodule.val_set_names, datamodule.test_dataloader(), strict=True):
        if trainer is None:
            split = extract_features(net, loader, options.branches, device, options.flip)
        else:
            found = extract_features_on(
                trainer, net, loader, options.branches, options.flip, shard_dir
            )
            if found is None:  # a helper rank: rank 0 does the rest
                continue
            split = found
        per_set: dict[str, Any] = {}
        for i, branch in enumerate(options.branches):
            per_set[branch], distmat = rank_split(split, branch, options, name)
            if i == 0 and pictures_dir is not None:
                picture = rank_list_picture(loader.dataset, split, distmat, num_picture_queries)
                path = save_png(picture, pictures_dir / f"rank_list_{name}_{branch}.png")
                results["pictures"].append(str(path))
        if name == "SYN":
            pairs = datamodule.syn_test_pairs_dataloader()
            per_set["dehaze"] = dehazing_quality(net, pairs, device, options.restoration_metrics)
        if pictures_dir is not None:
            hazy, clear = _dehazing_images(datamodule, name, loader)
            picture = dehazing_picture(net, hazy, clear, device)
            path = save_png(picture, pictures_dir / f"dehazing_{name}.png")
            results["pictures"].append(str(path))
        results["test_sets"][name] = per_set
        exported |= _exported_arrays(name, split)
    if trainer is not None and not trainer.is_global_zero:
        return None
    if export_features is not None:
        path = claim_features_file(export_features)  # ``.npz`` appended as numpy.savez would
        atomic_write(path, lambda handle: np.savez(handle, **exported))
        results["features"] = str(path)
    return results


def _dehazing_images(
    datamodule: RVSLDataModule, name: str, loader: DataLoader, count: int = PICTURE_IMAGES
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images of a test set's dehazing panel: SYN's first test pairs (hazy, clear); the
    first images of a real set, which has no ground truth (clear is None)."""
    if name == "SYN":
        hazy, clear = first_images(datamodule.syn_test_pairs_dataloader(), ("hazy", "clear"), count)
        return hazy, clear
    dataset = loader.dataset
    return torch.stack([dataset[i]["image"] for i in range(min(count, len(dataset)))]), None


def _exported_arrays(name: str, split: SplitFeatures) -> dict[str, np.ndarray]:
    arrays = {f"{name}_{b}_features": f.numpy() for b, f in split.features.items()}
    return arrays | {
        f"{name}_pids": split.pids.numpy(),
        f"{name}_camids": split.camids.numpy(),
        f"{name}_is_query": split.is_query.numpy(),
        f"{name}_paths": np.array(split.paths, dtype=str),
    }


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per (test set, branch) with the metrics in percent, then
    SSIM/PSNR where measured."""
    lines = [
        "| test set | branch | mAP | rank-1 | rank-5 | rank-10 | mINP |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, per_set in results["test_sets"].items():
        for branch in results["options"]["branches"]:
            values = per_set[branch]
            cells = " | ".join(f"{percent(values[m]):.2f}" for m in REID_METRICS)
            lines.append(f"| {name} | {branch} | {cells} |")
    dehaze = {n: s["dehaze"] for n, s in results["test_sets"].items() if "dehaze" in s}
    for name, quality in dehaze.items():
        lines.append("")
        lines.append(
            f"Dehazer on {name}: SSIM {quality['ssim']:.4f}, PSNR {quality['psnr']:.2f} dB"
        )
    return "\n".join(lines)


def log_results(loggers: Iterable[Any], results: dict[str, Any], step: int = 0) -> None:
    """Send the metrics (``test/<SET>/<branch>/<metric>``, fractions as in ``results``) and
    pictures to Lightning loggers."""
    from PIL import Image

    from rvsl.evaluation.image_logging import log_picture

    loggers = list(loggers)
    metrics: dict[str, float] = {}
    for name, per_set in results["test_sets"].items():
        for group, values in per_set.items():
            metrics |= {f"test/{name}/{group}/{k}": float(v) for k, v in values.items()}
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
    for path in results.get("pictures", []):
        picture = np.asarray(Image.open(path).convert("RGB"))
        log_picture(loggers, f"pictures/{Path(path).stem}", picture, step=step)
    for logger in loggers:
        logger.finalize("success")
