"""Map-style datasets over FVRID records; items are dicts that the default collate batches.

The training datasets can skip unreadable images (``strict=False``): a file that cannot be read
or decoded is logged once, remembered, and its item replaced by the next readable image of the
same identity (else the next readable image at all), so a PK batch keeps its shape and one bad
file never stops an epoch. Items carry ``skipped``: how many requested entries were unreadable
and replaced to produce them (0 or 1), and ``skipped_index``: that entry's index (-1: none), so
each bad file can be counted once however often it is drawn. The warning goes through
``logging``, which reaches stderr from DataLoader worker processes too. Every worker holds its
own copy of the dataset, so each worker learns (and warns about) a bad file once; the
datamodule keeps its workers between epochs. ``strict=True`` (the default here; the
datamodule passes ``data.strict``) raises on the first unreadable file instead, naming it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from rvsl.data.fvrid import ImageRecord, PairRecord
from rvsl.data.transforms import ImageReadError, load_image, to_float_image

Transform = Callable[[Any], Any]

log = logging.getLogger(__name__)

STRICT_HINT = "data.strict=false would skip it if it is a training image, with a warning"


def _plain(t: torch.Tensor) -> torch.Tensor:
    """Drop the tv_tensors subclass so batches are ordinary tensors."""
    return t.as_subclass(torch.Tensor)


class _SkipsUnreadable(Dataset):
    """Skip policy shared by the training datasets (see the module docstring).

    Subclasses set ``self.strict`` and call :meth:`_index_pids`, and implement
    ``_read(index)``, which raises OSError naming the file.
    """

    strict: bool

    def _index_pids(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
        by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(self._pids):
            by_pid[pid].append(i)
        self._by_pid = dict(by_pid)
        self._bad: dict[int, str] = {}  # index -> why; per instance, so per DataLoader worker

    @property
    def unreadable(self) -> dict[int, str]:
        """Entries found unreadable so far (index -> reason); they are not read again."""
        return dict(self._bad)

    def _read(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def _replacements(self, index: int) -> Iterator[int]:
        """Same identity first (the following indices, wrapping), then every other index."""
        same = self._by_pid[self._pids[index]]
        k = same.index(index)
        yield from same[k + 1 :] + same[:k]
        n = len(self._pids)
        for j in range(1, n):
            other = (index + j) % n
            if self._pids[other] != self._pids[index]:
                yield other

    def _try(self, index: int) -> dict[str, Any] | None:
        """The item, or None after recording (or, when strict, raising) why it is unreadable."""
        if index in self._bad:
            return None
        try:
            return self._read(index)
        except OSError as err:
            if self.strict:
                raise ImageReadError(f"{err} ({STRICT_HINT})") from err
            self._bad[index] = str(err)
            log.warning(
                "skipping an unreadable training image: %s; it is replaced by another image "
                "(data.strict=true makes this an error)",
                err,
            )
            return None

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._try(index)
        if item is not None:
            item["skipped"], item["skipped_index"] = 0, -1
            return item
        for other in self._replacements(index):
            item = self._try(other)
            if item is not None:
                item["skipped"], item["skipped_index"] = 1, index
                return item
        raise ImageReadError(
            f"no readable image left to replace an unreadable one: all {len(self._pids)} "
            f"entries of this training set failed, e.g. {self._bad[index]}"
        )


class SyntheticPairDataset(_SkipsUnreadable):
    """Clear image + synthetic hazy twin, transformed together (one random draw for both).

    Item: ``dict(clear, hazy, pid, camid, index, skipped)``; images float (3, H, W). A pair
    with either image unreadable is one skipped entry; a replacement item describes the pair
    actually loaded (its own index, pid, camid).
    """

    def __init__(
        self,
        pairs: Sequence[PairRecord],
        transform: Transform | None = None,
        strict: bool = True,
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.strict = bool(strict)
        self._index_pids(self.pids)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.pairs]

    def _read(self, index: int) -> dict[str, Any]:
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


class ImageDataset(_SkipsUnreadable):
    """Single images. Item: ``dict(image, pid, camid, index, path, skipped)``; image float
    (3, H, W). A replacement item describes the image actually loaded."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Transform | None = None,
        strict: bool = True,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.strict = bool(strict)
        self._index_pids(self.pids)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self.records]

    def _read(self, index: int) -> dict[str, Any]:
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
    e.g. to drop the padding duplicates of a sharded evaluation. Never skips: an unreadable test
    image raises ImageReadError naming it (a replaced test image would change the metrics).
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
        item = self._read(index)
        item["skipped"] = 0
        item["is_query"] = index < self.num_query
        return item


class TwinRetrievalDataset(RetrievalDataset):
    """A SYN-style retrieval set whose items also carry the hazy image's clear twin as ``clear``.

    ``image`` is the hazy image; both go through the same (deterministic) eval transform. It
    lets the clear branch embed the twin, as the official SYN protocol does.
    """

    def __init__(
        self,
        query: Sequence[PairRecord],
        gallery: Sequence[PairRecord],
        transform: Transform | None = None,
    ) -> None:
        def hazy(pairs: Sequence[PairRecord]) -> list[ImageRecord]:
            return [ImageRecord(p.hazy_path, p.pid, p.camid) for p in pairs]

        super().__init__(hazy(query), hazy(gallery), transform)
        self.twins = [p.clear_path for p in (*query, *gallery)]

    def _read(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        hazy, clear = load_image(rec.path), load_image(self.twins[index])
        if self.transform is not None:
            hazy, clear = self.transform((hazy, clear))
        else:
            hazy, clear = to_float_image(hazy), to_float_image(clear)
        return {
            "image": _plain(hazy),
            "clear": _plain(clear),
            "pid": rec.pid,
            "camid": rec.camid,
            "index": index,
            "path": str(rec.path),
        }
