"""``rvsl-search calibrate``: the distance beyond which a match is "no match", picked for a
precision on labelled images that are NOT the footage searched (a validation set: held-out
identities, e.g. the demo world's VAL identities).

Every labelled image queries all the others, as a re-identification test does: the same
identity seen by the same camera is not a match to find, so those are left out. Its nearest
remaining image is right or wrong; sorted by distance, the threshold is the largest distance
at which the accepted nearest matches are still right at least ``precision`` of the time.
It is stored in the index and used by ``query`` from then on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rvsl.metrics.distance import pairwise_distance
from rvsl.search.embedding import Embedder, EmbedOptions, recorded_embedding
from rvsl.search.files import SearchInputError, describe, find_images, read_meta
from rvsl.search.query import open_for_query


def nearest_other(
    features: torch.Tensor,
    identities: Sequence[str],
    cameras: Sequence[str | None],
    metric: str,
    exclude_same_camera: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(distance to, is-same-identity of) each image's nearest other image, same identity on
    the same camera excluded (``exclude_same_camera``: every image of the same camera, as
    ``query --exclude-same-camera`` does); chunked, memory stays O(chunk x N)."""
    ids = np.unique(np.asarray(identities, dtype=object), return_inverse=True)[1]
    cams = np.unique(np.asarray([c or "" for c in cameras], dtype=object), return_inverse=True)[1]
    ids_t, cams_t = torch.from_numpy(ids), torch.from_numpy(cams)
    known_cam = torch.tensor([c is not None for c in cameras])
    dist_out, right_out = [], []
    for start in range(0, len(features), 1024):
        block = slice(start, start + 1024)
        dist = pairwise_distance(features[block], features, metric)
        if metric == "euclidean":
            dist = dist.sqrt()  # the index's units (pairwise_distance gives it squared)
        same_id = ids_t[block, None] == ids_t[None, :]
        same_cam = (
            (cams_t[block, None] == cams_t[None, :]) & known_cam[None, :] & known_cam[block, None]
        )
        dist[same_cam if exclude_same_camera else same_id & same_cam] = float("inf")
        rows = torch.arange(dist.shape[0])
        dist[rows, rows + start] = float("inf")  # itself
        best, where = dist.min(dim=1)
        dist_out.append(best)
        right_out.append(same_id[rows, where])
    return torch.cat(dist_out).numpy(), torch.cat(right_out).numpy()


def pick_threshold(distances: np.ndarray, right: np.ndarray, precision: float) -> dict[str, Any]:
    """The largest distance whose accepted nearest matches reach ``precision``; with what
    precision and recall (accepted right ones / all images) it does."""
    finite = np.isfinite(distances)
    order = np.argsort(distances[finite], kind="stable")
    d, r = distances[finite][order], right[finite][order].astype(float)
    accepted_precision = np.cumsum(r) / np.arange(1, len(r) + 1)
    ok = np.flatnonzero(accepted_precision >= precision)
    if len(ok) == 0:
        raise SearchInputError(
            f"no distance reaches precision {precision:g} on these images (the nearest match "
            f"is right for {r.mean():.1%} of them); ask for a lower --precision"
        )
    last = ok[-1]
    return {
        "value": float(d[last]),
        "precision": float(accepted_precision[last]),
        "recall": float(np.cumsum(r)[last] / len(distances)),
        "target_precision": float(precision),
        "images": len(distances),
    }


def calibrate(
    index_dir: str | os.PathLike[str],
    roots: Sequence[str | os.PathLike[str]],
    precision: float = 0.9,
    embed: EmbedOptions | None = None,
    meta: str | os.PathLike[str] | None = None,
    checkpoint: str | None = None,
    exclude_same_camera: bool = False,
) -> dict[str, Any]:
    """Pick the threshold on the labelled images under ``roots`` and store it in the index.
    Calibrate as you will query: with ``exclude_same_camera`` when queries use it (a camera's
    own scenery can make its images look alike whatever the vehicle)."""
    if not 0 < precision <= 1:
        raise SearchInputError("--precision must be in (0, 1]")
    index, checkpoint = open_for_query(index_dir, checkpoint)
    paths = find_images(roots)
    infos = describe(paths, read_meta(meta) if meta else None)
    unlabelled = [i.path for i in infos if i.identity is None]
    if not infos or unlabelled:
        raise SearchInputError(
            "calibrate needs images whose folders or names carry identities (id_17/, "
            f"0801_c2_000.jpg, or an identity column in --meta); {len(unlabelled)} of "
            f"{len(infos)} have none" + (f", e.g. {unlabelled[0]}" if unlabelled else "")
        )
    manifest = index.manifest
    embed = recorded_embedding(manifest, embed)
    out = Embedder(checkpoint, embed).embed(paths)
    assert out is not None
    valid = out["valid"].numpy()
    if not valid.all():
        raise SearchInputError(f"{int((~valid).sum())} labelled image(s) could not be read")
    distances, right = nearest_other(
        out["feature"],
        [i.identity for i in infos],
        [i.camera for i in infos],
        manifest["metric"],
        exclude_same_camera,
    )
    chosen = pick_threshold(distances, right, precision)
    chosen |= {
        "identities": len({i.identity for i in infos}),
        "exclude_same_camera": exclude_same_camera,
        "folders": [str(r) for r in roots],
        "calibrated": time.time(),
    }
    index.set(max_distance=chosen)
    return chosen
