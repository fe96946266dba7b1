"""Haze synthesis by the atmospheric scattering model, for the demo world and users' own images.

Koschmieder's atmospheric scattering model, as used by the FVRID synthesis scripts::

    I = J * t + A * (1 - t),    t = exp(-beta * d)

``J`` is the clear image, ``I`` the hazy one, ``A`` the airlight (the colour of the haze at
infinite distance), ``beta`` the scattering coefficient (haze density) and ``d`` the depth,
normalised to [0, 1]. FVRID draws ``beta ~ U(1, 5)`` and a gray ``A ~ U(0.4, 1.0)`` per image.

Arrays are numpy, channels last: an image is (H, W, 3) float in [0, 1], a batch (N, H, W, 3); a
depth map is (H, W) or (N, H, W). Everything is vectorised over pixels and images.

Images without a depth map get a depth prior (:func:`prior_depth`):

- ``ground`` (default): a ground-plane ramp. Seen from a road camera the ground recedes toward
  the top of the frame, so depth grows linearly from ``near`` at the bottom row to ``far`` at the
  top row, the same for every column.
- ``ground+dark``: that ramp blended with the dark-channel estimate (weight 0.3): bright,
  colourless regions (sky, haze-like walls) have a high dark channel and are taken as farther.

Depth maps are resized to their image, never stretched: one whose aspect ratio differs from the
image's (beyond a pixel of rounding) is refused. Folders of images: :mod:`rvsl.data.fog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: FVRID's per-image ranges (the authors' synthesis scripts).
FVRID_BETA = (1.0, 5.0)
FVRID_AIRLIGHT = (0.4, 1.0)

DEPTH_PRIORS = ("ground", "ground+dark")


class HazeError(ValueError):
    """Bad haze-synthesis input: a folder, a depth map, or a parameter range."""


# --------------------------------------------------------------------------- the model


def _per_image(value: np.ndarray, batched: bool, what: str, n: int) -> np.ndarray:
    """Reshape a per-image vector (N,) to broadcast against (N, H, W[, C])."""
    if value.ndim == 1 and batched:
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} values for a batch of {n} images")
        return value.reshape(n, 1, 1)
    return value


def transmission(depth: np.ndarray, beta: float | np.ndarray) -> np.ndarray:
    """Transmission ``t = exp(-beta * d)``, in (0, 1] for ``beta, d >= 0``.

    ``depth`` is (H, W) or (N, H, W) in [0, 1]. ``beta`` is a scalar, one value per image (N,)
    for a batch, or a density map broadcastable to ``depth`` (non-homogeneous haze).
    """
    depth = np.asarray(depth, dtype=np.float32)
    beta = np.asarray(beta, dtype=np.float32)
    beta = _per_image(beta, depth.ndim == 3, "beta", len(depth) if depth.ndim == 3 else 1)
    return np.exp(-beta * depth)


def scatter(clear: np.ndarray, t: np.ndarray, airlight: float | np.ndarray) -> np.ndarray:
    """Atmospheric scattering ``I = J * t + A * (1 - t)``.

    ``clear`` J is (H, W, 3) or (N, H, W, 3) float; ``t`` has its shape without the channels.
    ``airlight`` A is a scalar (gray), an RGB triple (3,), or for a batch one gray value per image
    (N,) or one RGB per image (N, 3); a full map of ``clear``'s shape also works.
    """
    clear = np.asarray(clear, dtype=np.float32)
    t = np.asarray(t, dtype=np.float32)[..., None]
    a = np.asarray(airlight, dtype=np.float32)
    if clear.ndim == 4 and a.ndim == 1:
        a = a.reshape(len(clear), 1, 1, 1) if len(a) == len(clear) else a
    elif clear.ndim == 4 and a.ndim == 2:
        a = a.reshape(len(a), 1, 1, a.shape[1])
    return clear * t + a * (1.0 - t)


def add_haze(
    clear: np.ndarray,
    depth: np.ndarray,
    beta: float | np.ndarray,
    airlight: float | np.ndarray,
) -> np.ndarray:
    """Hazy image(s) from clear image(s) and depth: :func:`scatter` with :func:`transmission`."""
    return scatter(clear, transmission(depth, beta), airlight)


# --------------------------------------------------------------------------- image helpers


def gaussian_blur(image: np.ndarray, sigma: float, channels_last: bool = True) -> np.ndarray:
    """Separable Gaussian blur over the two spatial axes, reflecting at the border.

    Spatial axes are (-3, -2) when ``channels_last`` (images (..., H, W, C)), else (-2, -1)
    (depth and density maps). ``sigma <= 0`` returns the input unchanged.
    """
    image = np.asarray(image, dtype=np.float32)
    if sigma <= 0:
        return image
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    axes = (image.ndim - 3, image.ndim - 2) if channels_last else (image.ndim - 2, image.ndim - 1)
    for axis in axes:
        n = image.shape[axis]
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="reflect" if n > radius else "edge")
        index = [slice(None)] * image.ndim
        out = np.zeros_like(image)
        for k, w in enumerate(taps):
            index[axis] = slice(k, k + n)
            out += w * padded[tuple(index)]
        image = out
    return image


def min_filter(image: np.ndarray, size: int) -> np.ndarray:
    """Square min filter of odd ``size`` over the last two axes (edge-padded), separable."""
    if size <= 1:
        return image
    r = size // 2
    out = image
    for axis in (-2, -1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        windows = np.lib.stride_tricks.sliding_window_view(
            np.pad(out, pad, mode="edge"), size, axis=axis
        )
        out = windows.min(axis=-1)
    return out


def dark_channel(image: np.ndarray, patch: int) -> np.ndarray:
    """Dark channel (He et al.): min over RGB, then a ``patch`` x ``patch`` min filter.

    ``image`` (..., H, W, 3) -> (..., H, W). Near 0 on haze-free pixels except bright, colourless
    ones; haze lifts it toward the airlight.
    """
    return min_filter(np.asarray(image, dtype=np.float32).min(axis=-1), patch)


def smooth_field(rng: np.random.Generator, height: int, width: int, cells: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1] of shape (H, W): a ``cells`` x ``cells`` grid of uniform
    values upsampled bicubically (used to modulate haze density)."""
    grid = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    up = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(up, dtype=np.float32), -1.0, 1.0)


# --------------------------------------------------------------------------- depth


def ground_plane_depth(height: int, width: int, near: float = 0.2, far: float = 0.8) -> np.ndarray:
    """Ground-plane depth prior (H, W): ``far`` on the top row, ``near`` on the bottom row,
    linear in between and constant along each row (the ground recedes toward the top)."""
    if not 0.0 <= near <= far <= 1.0:
        raise HazeError(f"need 0 <= near <= far <= 1 for the ground prior, got {near}, {far}")
    rows = np.linspace(far, near, height, dtype=np.float32)
    return np.repeat(rows[:, None], width, axis=1)


def dark_channel_depth(image: np.ndarray) -> np.ndarray:
    """Relative depth from the dark channel, min-max normalised to [0, 1] and smoothed.

    Bright colourless regions (high dark channel) are taken as far. ``image`` is (H, W, 3).
    """
    h, w = image.shape[:2]
    patch = max(3, (min(h, w) // 16) | 1)
    dark = gaussian_blur(dark_channel(image, patch), patch / 2.0, channels_last=False)
    lo, hi = float(dark.min()), float(dark.max())
    return (dark - lo) / (hi - lo) if hi > lo else np.zeros_like(dark)


def prior_depth(
    image: np.ndarray,
    prior: str = "ground",
    near: float = 0.2,
    far: float = 0.8,
    dark_weight: float = 0.3,
) -> np.ndarray:
    """Depth prior (H, W) in [0, 1] for an image (H, W, 3) without a depth map.

    ``ground``: :func:`ground_plane_depth`. ``ground+dark``: ``(1 - w) * ground + w * dark``
    with the dark-channel estimate rescaled to [near, far] and ``w = dark_weight``.
    """
    h, w = image.shape[:2]
    ground = ground_plane_depth(h, w, near, far)
    if prior == "ground":
        return ground
    if prior == "ground+dark":
        dark = near + (far - near) * dark_channel_depth(image)
        return ((1.0 - dark_weight) * ground + dark_weight * dark).astype(np.float32)
    raise HazeError(f"unknown depth prior {prior!r}; expected one of {DEPTH_PRIORS}")


def describe_prior(prior: str, near: float = 0.2, far: float = 0.8) -> str:
    """One line saying which depth prior is used (printed by ``rvsl-data fog``)."""
    ramp = f"ground-plane prior (depth {near:g} at the bottom row rising to {far:g} at the top)"
    if prior == "ground":
        return ramp
    if prior == "ground+dark":
        return f"{ramp} blended 70/30 with a dark-channel depth estimate"
    raise HazeError(f"unknown depth prior {prior!r}; expected one of {DEPTH_PRIORS}")


def same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether grid ``b`` (H, W) is grid ``a`` resized by one factor, give or take a pixel of
    rounding on each axis (so a depth map may be a resized copy of its image, not a stretch)."""
    (ah, aw), (bh, bw) = a, b
    return max((bh - 1) / ah, (bw - 1) / aw) <= min((bh + 1) / ah, (bw + 1) / aw)


def load_depth(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a depth map as float32 (H, W) in [0, 1], resized (bilinear) to ``size`` = (H, W).

    PNG/TIFF: 8-bit maps are divided by 255, 16-bit ones by 65535; float maps and ``.npy``
    arrays already in [0, 1] are kept, others are min-max normalised. Multi-channel maps use the
    first channel. Raises HazeError naming the file when it cannot be read, or when its aspect
    ratio differs from ``size``'s (:func:`same_aspect`): it would be stretched.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            depth = np.load(path, allow_pickle=False)
        else:
            with Image.open(path) as img:
                depth = np.asarray(img)
    except (OSError, ValueError) as err:
        raise HazeError(f"cannot read depth map {path}: {err}") from err
    if depth.ndim == 3:
        depth = depth[..., 0]
    if depth.ndim != 2 or depth.size == 0:
        raise HazeError(f"depth map {path} has shape {depth.shape}; expected (H, W)")
    if size is not None and not same_aspect(tuple(size), depth.shape):
        raise HazeError(
            f"depth map {path} is {depth.shape[0]} x {depth.shape[1]} but its image is "
            f"{size[0]} x {size[1]}: the aspect ratios differ, so it would be stretched"
        )
    if depth.dtype == np.uint8:
        depth = depth.astype(np.float32) / 255.0
    elif depth.dtype in (np.uint16, np.int32) and path.suffix.lower() != ".npy":
        depth = depth.astype(np.float32) / 65535.0
    else:
        depth = depth.astype(np.float32)
        if not np.isfinite(depth).all():
            raise HazeError(f"depth map {path} holds NaN or infinite values")
        lo, hi = float(depth.min()), float(depth.max())
        if lo < 0.0 or hi > 1.0:
            depth = (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)
    depth = np.clip(depth, 0.0, 1.0)
    if size is not None and depth.shape != tuple(size):
        img = Image.fromarray(depth).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        depth = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    return depth


def depth_shape(path: str | Path) -> tuple[int, int]:
    """(H, W) of a depth map from its header only (PNG/TIFF) or its array header (``.npy``)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        else:
            with Image.open(path) as img:
                shape = (img.height, img.width)
    except (OSError, ValueError) as err:
        raise HazeError(f"cannot read depth map {path}: {err}") from err
    if len(shape) not in (2, 3) or 0 in shape[:2]:
        raise HazeError(f"depth map {path} has shape {tuple(shape)}; expected (H, W)")
    return int(shape[0]), int(shape[1])


# --------------------------------------------------------------------------- the synthesizer


def _check_range(name: str, value: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    a, b = (float(v) for v in value)
    if not lo <= a <= b <= hi:
        raise HazeError(f"{name} must be LO HI with {lo} <= LO <= HI <= {hi}, got {a} {b}")
    return a, b


@dataclass(frozen=True)
class HazeSynthesizer:
    """FVRID-style synthetic haze: ``beta ~ U(beta)``, gray ``A ~ U(airlight)`` per image.

    Call it with clear image(s) in [0, 1], depth map(s) in [0, 1] and a seeded generator; it
    returns the hazy image(s) (float, clipped to [0, 1]) and the drawn ``beta`` and ``A``.
    """

    beta: tuple[float, float] = FVRID_BETA
    airlight: tuple[float, float] = FVRID_AIRLIGHT

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _check_range("beta", self.beta, 0.0, np.inf))
        object.__setattr__(self, "airlight", _check_range("airlight", self.airlight, 0.0, 1.0))

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` (beta, A) pairs as two float32 arrays (N,)."""
        beta = rng.uniform(*self.beta, size=n).astype(np.float32)
        airlight = rng.uniform(*self.airlight, size=n).astype(np.float32)
        return beta, airlight

    def __call__(
        self, clear: np.ndarray, depth: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        batched = np.ndim(clear) == 4
        beta, airlight = self.sample(rng, len(clear) if batched else 1)
        if not batched:
            beta, airlight = beta[0], airlight[0]
        hazy = np.clip(add_haze(clear, depth, beta, airlight), 0.0, 1.0)
        return hazy, beta, airlight
