"""Map-style datasets over FVRID records; items are dicts that the default collate batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from rvsl.data.fvrid import ImageRecord, PairRecord
from rvsl.data.transforms import load_image, to_float_image

Transform = Callable[[Any], Any]


def _plain(t: torch.Tensor) -> torch.Tensor:
    """Drop the tv_tensors subclass so batches are ordinary tensors."""
    return t.as_subclass(torch.Tensor)


class SyntheticPairDataset(Dataset):
    """Clear image + synthetic hazy twin, transformed together (one random draw for both).

    Item: ``dict(clear, hazy, pid, camid, index)``; images float (3, H, W).
    """

    def __init__(self, pairs: Sequence[PairRecord], transform: Transform | None = None) -> None:
        self.pairs = list(pairs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.pairs]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.pairs[index]
        clear, hazy = load_image(rec.clear_path), load_image(rec.hazy_path)
        if self.transform is not None:
            clear, hazy = self.transform((clear, hazy))
        else:
            clear, hazy = to_float_image(clear), to_float_image(hazy)
        return {
            "clear": _plain(clear),
            "hazy": _plain(hazy),
            "pid": rec.pid,
            "camid": rec.camid,
            "index": index,
        }


class ImageDataset(Dataset):
    """Single images. Item: ``dict(image, pid, camid, index, path)``; image float (3, H, W)."""

    def __init__(self, records: Sequence[ImageRecord], transform: Transform | None = None) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self.records]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        image = load_image(rec.path)
        image = self.transform(image) if self.transform is not None else to_float_image(image)
        return {
            "image": _plain(image),
            "pid": rec.pid,
            "camid": rec.camid,
            "index": index,
            "path": str(rec.path),
        }


class RetrievalDataset(ImageDataset):
    """Query images followed by gallery images; items carry ``is_query`` on top of ImageDataset's.

    ``index`` runs over the concatenation (queries first), so it identifies an image uniquely,
    e.g. to drop the padding duplicates of a sharded evaluation.
    """

    def __init__(
        self,
        query: Sequence[ImageRecord],
        gallery: Sequence[ImageRecord],
        transform: Transform | None = None,
    ) -> None:
        super().__init__([*query, *gallery], transform)
        self.num_query = len(query)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item["is_query"] = index < self.num_query
        return item
