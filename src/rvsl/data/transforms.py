"""Image loading and the train / eval pipelines (torchvision.transforms.v2).

The train pipeline is called once on one image or on a ``(clear, hazy)`` tuple: v2 draws each
transform's random parameters once per call, so both images of a synthetic pair get the same
scale, crop, flip and erased rectangle.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

#: ImageNet statistics, used only when normalisation is switched on (the reference does not).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageReadError(OSError):
    """An image file could not be opened or decoded."""


def load_image(path: str | Path) -> tv_tensors.Image:
    """Read an image file as an RGB uint8 ``tv_tensors.Image`` (C, H, W).

    Raises ImageReadError naming the file when it is missing, truncated or not an image. The
    pixels are decoded here, in full (PIL decodes lazily, and a truncated file fails only then;
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False, its default, or PIL pads it silently).
    """
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        struct.error,
        zlib.error,
        Image.DecompressionBombError,
    ) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    return F.pil_to_tensor(rgb).as_subclass(tv_tensors.Image)


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


class RandomScaleCenterCrop(v2.Transform):
    """Resize to ``size`` times a random factor in ``scale``, then centre-crop to ``size``.

    One factor is drawn per call and applied to every image in the call.
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (1.0, 1.2)) -> None:
        super().__init__()
        self.size = _size_pair(size)
        lo, hi = (float(s) for s in scale)
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale}")
        self.scale = (lo, hi)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        factor = torch.empty(()).uniform_(*self.scale).item()
        h, w = self.size
        return {"resized": (max(h, round(h * factor)), max(w, round(w * factor)))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = self._call_kernel(F.resize, inpt, list(params["resized"]), antialias=True)
        return self._call_kernel(F.center_crop, out, list(self.size))


def _tail(normalize: bool, mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.Normalize(list(mean), list(std))] if normalize else []


def build_train_transform(
    size: int | Sequence[int],
    scale: Sequence[float] = (1.0, 1.2),
    flip_p: float = 0.5,
    erase_p: float = 0.5,
    erase_scale: Sequence[float] = (0.02, 0.4),
    erase_ratio: Sequence[float] = (0.3, 1 / 0.3),
    normalize: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Train pipeline: random scale + centre crop to ``size`` (H, W), h-flip, random erasing (0).

    Output is float32 in [0, 1] (or normalised with mean/std when ``normalize``). Call it on a
    single image or on a tuple of images; a tuple shares every random draw.
    """
    return v2.Compose(
        [
            v2.ToImage(),
            RandomScaleCenterCrop(size, scale),
            v2.RandomHorizontalFlip(flip_p),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomErasing(p=erase_p, scale=erase_scale, ratio=erase_ratio, value=0.0),
            *_tail(normalize, mean, std),
        ]
    )


def build_eval_transform(
    size: int | Sequence[int],
    normalize: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Eval pipeline: resize to ``size`` (H, W), float32 in [0, 1] (optionally normalised)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(list(_size_pair(size)), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            *_tail(normalize, mean, std),
        ]
    )


def to_float_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 image -> float32 in [0, 1], used when a dataset is given no transform."""
    return F.to_dtype(image, torch.float32, scale=True)
