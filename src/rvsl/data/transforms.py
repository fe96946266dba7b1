"""Image loading and the train / eval pipelines (torchvision.transforms.v2).

:func:`load_image` reads every file as 8-bit RGB, 16-bit grey PNG/TIFF included (scaled to 8 bits
as Pillow scales 16-bit colour PNGs: the high byte; its own RGB conversion would clip to white).

The train pipeline is called once on one image or on a ``(clear, hazy)`` tuple: v2 draws each
transform's random parameters once per call, so both images of a synthetic pair get the same
scale, crop, flip and erased rectangle.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

#: ImageNet statistics, used only when normalisation is switched on (the reference does not).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Per-channel fill of the reference's random erasing (``erase_fill="mean"``).
ERASE_MEAN = (0.4914, 0.4822, 0.4465)

ERASE_FILLS = ("zero", "mean")
ERASE_RATIO_SAMPLINGS = ("log_uniform", "uniform")
SCALE_JITTERS = ("shared", "per_axis")


class ImageReadError(OSError):
    """An image file could not be opened or decoded."""


def to_rgb(img: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB. 16-bit grey (modes ``I;16*``) keeps its high byte, as
    Pillow does for 16-bit colour PNGs; 32-bit integer or float images (modes ``I``, ``F``) are
    converted only when their values lie in 0..255, else ValueError (Pillow would clip them)."""
    if img.mode.startswith("I;16"):
        values = np.asarray(img).astype(np.uint16)
        return Image.fromarray((values >> 8).astype(np.uint8)).convert("RGB")
    if img.mode in ("I", "F"):
        values = np.asarray(img)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"mode {img.mode} image with values from {lo:g} to {hi:g}; save it with 8 or 16 "
                "bits per channel"
            )
    return img.convert("RGB")


def load_image(path: str | Path) -> tv_tensors.Image:
    """Read an image file as an RGB uint8 ``tv_tensors.Image`` (C, H, W); see :func:`to_rgb`.

    Raises ImageReadError naming the file when it is missing (a dangling symbolic link
    included), truncated or not an image. The pixels are decoded here, in full (PIL decodes
    lazily, and a truncated file fails only then; ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay
    False, its default, or PIL pads it silently).
    """
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        struct.error,
        zlib.error,
        Image.DecompressionBombError,
    ) as err:
        reason = str(err)
        if Path(path).is_symlink() and not Path(path).exists():
            reason = f"dangling symbolic link to {os.readlink(path)}"
        raise ImageReadError(f"cannot read image {path}: {reason}") from err
    return F.pil_to_tensor(rgb).as_subclass(tv_tensors.Image)


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``N`` or ``(H, W)`` -> ``(H, W)`` of positive integers; anything else is a ValueError."""
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or not all(int(s) > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


class RandomScaleCenterCrop(v2.Transform):
    """Resize to ``size`` times a random factor in ``scale``, then centre-crop to ``size``.

    ``per_axis=False``: one factor for both axes, sizes rounded. ``per_axis=True`` (the
    reference): independent height and width factors, sizes truncated with ``int()``. The
    factors are drawn once per call and applied to every image in the call.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (1.0, 1.2),
        per_axis: bool = False,
    ) -> None:
        super().__init__()
        self.size = size_pair(size)
        lo, hi = (float(s) for s in scale)
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale}")
        self.scale = (lo, hi)
        self.per_axis = bool(per_axis)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = self.size
        if self.per_axis:
            hr = torch.empty(()).uniform_(*self.scale).item()
            wr = torch.empty(()).uniform_(*self.scale).item()
            return {"resized": (max(h, int(h * hr)), max(w, int(w * wr)))}
        factor = torch.empty(()).uniform_(*self.scale).item()
        return {"resized": (max(h, round(h * factor)), max(w, round(w * factor)))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = self._call_kernel(F.resize, inpt, list(params["resized"]), antialias=True)
        return self._call_kernel(F.center_crop, out, list(self.size))


class RandomErasingDraws(v2.RandomErasing):
    """``v2.RandomErasing`` with a choice of aspect-ratio law and number of attempts.

    ``ratio_sampling="log_uniform"`` with 10 attempts draws exactly as torchvision does;
    ``"uniform"`` with 100 attempts is the reference's draw. Each attempt draws the area
    fraction in ``scale`` and the ratio (height / width) in ``ratio``, and is kept when the
    rectangle fits strictly inside the image; when every attempt fails nothing is erased.
    """

    def __init__(
        self, *args: Any, ratio_sampling: str = "log_uniform", attempts: int = 10, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ratio_sampling = _choice("erase_ratio_sampling", ratio_sampling, ERASE_RATIO_SAMPLINGS)
        self.attempts = _positive("erase_attempts", attempts)

    def _draw_ratio(self) -> float:
        if self.ratio_sampling == "uniform":
            return torch.empty(1).uniform_(self.ratio[0], self.ratio[1]).item()
        lo, hi = (float(r) for r in self._log_ratio)
        return torch.exp(torch.empty(1).uniform_(lo, hi)).item()

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        img_c, img_h, img_w = v2.query_chw(flat_inputs)
        if self.value is not None and len(self.value) not in (1, img_c):
            raise ValueError(f"erasing value needs 1 or {img_c} entries, got {len(self.value)}")
        area = img_h * img_w
        for _ in range(self.attempts):
            erase_area = area * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
            ratio = self._draw_ratio()
            h = round(math.sqrt(erase_area * ratio))
            w = round(math.sqrt(erase_area / ratio))
            if not (h < img_h and w < img_w):
                continue
            if self.value is None:
                v = torch.empty([img_c, h, w], dtype=torch.float32).normal_()
            else:
                v = torch.tensor(self.value)[:, None, None]
            i = torch.randint(0, img_h - h + 1, size=(1,)).item()
            j = torch.randint(0, img_w - w + 1, size=(1,)).item()
            return dict(i=i, j=j, h=h, w=w, v=v)
        return dict(i=0, j=0, h=img_h, w=img_w, v=None)


def _choice(name: str, value: str, options: Sequence[str]) -> str:
    if value not in options:
        allowed = " or ".join(repr(o) for o in options)
        raise ValueError(f"data.{name} must be {allowed}, not {value!r}")
    return value


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"data.{name} must be a positive integer, not {value!r}")
    return value


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
    erase_fill: str = "zero",
    erase_ratio_sampling: str = "log_uniform",
    erase_attempts: int = 10,
    scale_jitter: str = "shared",
) -> v2.Compose:
    """Train pipeline: random scale + centre crop to ``size`` (H, W), h-flip, random erasing.

    Output is float32 in [0, 1] (or normalised with mean/std when ``normalize``). Call it on a
    single image or on a tuple of images; a tuple shares every random draw. The defaults are
    torchvision's erasing with black fill and one shared scale factor; the reference's
    behaviours are ``erase_fill="mean"`` (fill with ``ERASE_MEAN``),
    ``erase_ratio_sampling="uniform"``, ``erase_attempts=100`` and ``scale_jitter="per_axis"``.
    Erasing runs before the optional normalisation, so its fill is in [0, 1] pixel units.
    """
    fill = _choice("erase_fill", erase_fill, ERASE_FILLS)
    _choice("erase_ratio_sampling", erase_ratio_sampling, ERASE_RATIO_SAMPLINGS)
    _positive("erase_attempts", erase_attempts)
    per_axis = _choice("scale_jitter", scale_jitter, SCALE_JITTERS) == "per_axis"
    value: float | list[float] = list(ERASE_MEAN) if fill == "mean" else 0.0
    erase_args = dict(p=erase_p, scale=erase_scale, ratio=erase_ratio, value=value)
    if erase_ratio_sampling == "log_uniform" and erase_attempts == 10:
        erase: v2.RandomErasing = v2.RandomErasing(**erase_args)  # torchvision's own draws
    else:
        erase = RandomErasingDraws(
            **erase_args, ratio_sampling=erase_ratio_sampling, attempts=erase_attempts
        )
    return v2.Compose(
        [
            v2.ToImage(),
            RandomScaleCenterCrop(size, scale, per_axis=per_axis),
            v2.RandomHorizontalFlip(flip_p),
            v2.ToDtype(torch.float32, scale=True),
            erase,
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
            v2.Resize(list(size_pair(size)), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            *_tail(normalize, mean, std),
        ]
    )


def undo_normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) ImageNet-normalised images back in [0, 1] units: ``x * std + mean``."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return images * std + mean


def to_float_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 image -> float32 in [0, 1], used when a dataset is given no transform."""
    return F.to_dtype(image, torch.float32, scale=True)
