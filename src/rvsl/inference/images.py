"""Image files as a dataset for the embedding engine: decoded in loader workers, and a file
that cannot be read is marked (``valid`` False, a blank image) instead of ending the run."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from rvsl.data.transforms import ImageReadError, load_image


def content_hash(path: str | os.PathLike[str]) -> str:
    """A file's BLAKE2b-128 hex digest: the same bytes under another name are the same image."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


class ImageFiles(Dataset):
    """``paths[i]`` -> ``{"image": (3, H, W) float, "valid": bool, "error": str}`` (+ ``"hash"``
    when ``with_hash``). An unreadable file gives a zero image, ``valid`` False and the reason
    in ``error``, so one bad file among a million costs one row, not the run."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        transform: Callable[[Any], torch.Tensor],
        image_size: tuple[int, int],
        with_hash: bool = False,
    ) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.transform = transform
        self.image_size = tuple(image_size)
        self.with_hash = with_hash

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        item: dict[str, Any] = {"valid": True, "error": ""}
        try:
            if self.with_hash:
                item["hash"] = content_hash(path)
            image = self.transform(load_image(path)).as_subclass(torch.Tensor)
        except (ImageReadError, OSError) as err:
            item |= {"valid": False, "error": str(err) or type(err).__name__}
            item.setdefault("hash", "")
            image = torch.zeros(3, *self.image_size)
        return item | {"image": image}
