"""The held-out haze: a second "real" haze, kept out of every tuning decision.

The demo's "real" haze (:func:`.sensors.real_haze`) is what RVSL trains on (unlabelled) and
what its recipe is tuned on, so a good REAL_FOGGY score may only mean the recipe fits that one
haze. :func:`heldout_haze` is a physically plausible haze of another kind, applied to the same
real test renders and written to ``FVRID_heldout/{query,gallery}_foggy``; it is meant to be
evaluated once, at the end, never while choosing anything.

It is a ground fog seen in colour, with a lamp in it:

- wavelength-dependent extinction (Angstrom law ``beta_c = beta0 * (lambda_c / 550 nm) ** -q``,
  ``q ~ U(1, 2)``): blue is scattered more than red, so a distant thing shifts in hue with its
  depth, while the fog itself is neutral (achromatic airlight ``A ~ U(0.6, 0.9)``);
- a ground layer: the density is ``beta0 ~ U(3, 7)`` at the bottom row and falls exponentially
  with the height in the image (scale height ``U(0.25, 0.6)`` of the image, down to a floor
  ``U(0.15, 0.4)`` of the ground value), the same along each row;
- veiling glare: a bright, depth-independent halo ``g / (1 + (r / rho) ** 2)`` around a light
  source in the upper half, off-centre or just outside the frame.

None of these is in the other two hazes. The synthetic haze (:class:`rvsl.data.haze.
HazeSynthesizer`) has one beta per image, the same in every channel, and a gray airlight. The
"real" haze has one transmission for all channels, a random smooth density field (no vertical
order), a tinted airlight brighter toward the top, a warped depth law and forward-scatter blur,
and no light source. The strengths are comparable (``tests/test_heldout_haze.py`` holds the two
within a band, measured as the mean effective transmission and edge contrast on the same renders).

For hazes this project did not design, the world also keeps each real test render's clean scene
(``{query,gallery}_scene``, 8-bit PNG, before any sensor) and its depth (``{query,gallery}_depth``,
16-bit PNG: ``value / DEPTH_UNITS_PER_METRE`` metres, ``value / 65535`` the world's normalised
depth); ``docs/heldout_haze.md`` shows how to haze them and evaluate.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from rvsl.data.demo_world.render import FAR
from rvsl.data.fvrid import HELDOUT_DIR

SPLITS = ("query", "gallery")
#: Every folder of the held-out set, in table order: hazy images, clean scenes, depth maps.
HELDOUT_FOLDERS: tuple[str, ...] = tuple(
    f"{HELDOUT_DIR}/{split}_{kind}" for kind in ("foggy", "scene", "depth") for split in SPLITS
)
#: 16-bit depth PNG: metres times this; 65535 (the largest value) is ``FAR``.
DEPTH_UNITS_PER_METRE = 65535.0 / FAR
#: Effective wavelengths (nm) of the R, G and B channels, for the Angstrom law.
CHANNEL_WAVELENGTHS = np.array([610.0, 550.0, 465.0], np.float32)


def channel_extinction(q: float) -> np.ndarray:
    """Relative extinction of R, G, B (3,) by the Angstrom law with exponent ``q`` (1 at green):
    haze particles scatter short wavelengths more."""
    return (CHANNEL_WAVELENGTHS / 550.0) ** -np.float32(q)


def ground_fog_profile(height: int, scale_height: float, floor: float) -> np.ndarray:
    """Density per image row (H,), 1 at the bottom row, falling exponentially with the height
    in the image (``scale_height`` a fraction of it) toward ``floor``: fog settled on the ground."""
    above_bottom = 1.0 - (np.arange(height, dtype=np.float32) + 0.5) / height
    return floor + (1.0 - floor) * np.exp(-above_bottom / scale_height)


def lamp_glare(
    height: int, width: int, centre: tuple[float, float], radius: float, strength: float
) -> np.ndarray:
    """Veiling glare (H, W): a Lorentzian halo of peak ``strength`` around ``centre`` (row,
    column as fractions of the image, may lie outside it), ``radius`` a fraction of the side."""
    rows = (np.arange(height, dtype=np.float32) + 0.5) / height - centre[0]
    cols = (np.arange(width, dtype=np.float32) + 0.5) / width - centre[1]
    r2 = (rows[:, None] ** 2 + cols[None, :] ** 2) / radius**2
    return (strength / (1.0 + r2)).astype(np.float32)


def heldout_transmission(
    depth: np.ndarray, beta0: float, q: float, scale_height: float, floor: float
) -> np.ndarray:
    """Per-channel transmission (H, W, 3) of the ground fog: ``exp(-beta0 * profile(row) *
    extinction_c * d)``, ``d`` the normalised depth (H, W)."""
    profile = ground_fog_profile(depth.shape[0], scale_height, floor)
    beta = beta0 * profile[:, None, None] * channel_extinction(q)[None, None, :]
    return np.exp(-beta * np.asarray(depth, np.float32)[..., None]).astype(np.float32)


def heldout_haze(scene: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The held-out haze of a clean scene (H, W, 3) in [0, 1] with its depth (H, W) in [0, 1]:
    ``I = J t_c + A (1 - t_c) + glare``, clipped to [0, 1] (see the module docstring).
    Deterministic given ``rng``."""
    h, w = depth.shape
    beta0 = rng.uniform(3.0, 7.0)
    q = rng.uniform(1.0, 2.0)
    scale_height = rng.uniform(0.25, 0.6)
    floor = rng.uniform(0.15, 0.4)
    airlight = rng.uniform(0.6, 0.9)
    side = 1.0 if rng.random() < 0.5 else -1.0
    centre = (rng.uniform(0.05, 0.5), 0.5 + side * rng.uniform(0.3, 0.7))
    glare = lamp_glare(h, w, centre, rng.uniform(0.15, 0.35), rng.uniform(0.05, 0.15))
    t = heldout_transmission(depth, beta0, q, scale_height, floor)
    hazy = scene * t + airlight * (1.0 - t) + glare[..., None]
    return np.clip(hazy, 0.0, 1.0).astype(np.float32)


def scene_png(scene: np.ndarray) -> bytes:
    """A clean scene (H, W, 3) in [0, 1] as 8-bit RGB PNG bytes."""
    pixels = np.round(np.clip(scene, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def depth_png(depth: np.ndarray) -> bytes:
    """A normalised depth map (H, W) in [0, 1] as 16-bit grayscale PNG bytes:
    ``round(metres * DEPTH_UNITS_PER_METRE)``, so 65535 is ``FAR`` metres."""
    units = np.round(np.clip(depth, 0.0, 1.0) * FAR * DEPTH_UNITS_PER_METRE)
    buf = io.BytesIO()
    Image.fromarray(units.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def read_depth_metres(path: str | Path) -> np.ndarray:
    """A depth PNG written by :func:`depth_png`, in metres (H, W) float32."""
    with Image.open(path) as img:
        units = np.asarray(img, dtype=np.float32)
    return units / np.float32(DEPTH_UNITS_PER_METRE)


def source_pngs(split: str, scene: np.ndarray, depth: np.ndarray) -> list[tuple[str, bytes]]:
    """(folder, PNG bytes) of one real test render's clean scene and depth map, for hazes
    brought from outside the project."""
    return [
        (f"{HELDOUT_DIR}/{split}_scene", scene_png(scene)),
        (f"{HELDOUT_DIR}/{split}_depth", depth_png(depth)),
    ]
