"""Demo-world identities: what one vehicle is, drawn from a seed.

Seven body types (sedan, hatchback, SUV, van, pickup, truck, bus) with per-identity fine-grained
differences: colour shade from a realistic palette (white, black, silver and gray dominate, so
many identities share type and colour), proportions, side stripes, hood stripes, a decal,
two-tone roof, sunroof, roof rack or roof box, spoiler, rim colour, headlight / taillight /
grille styles and a plate-like code. Same-type, same-colour identities are genuinely
confusable. The shape is built in :mod:`.mesh`, the details are painted in :mod:`.textures`.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: name: (weight, length, width, height, clearance, wheel radius)
BODY_TYPES: dict[str, tuple[float, float, float, float, float, float]] = {
    "sedan": (0.26, 4.6, 1.80, 1.45, 0.20, 0.31),
    "hatchback": (0.14, 4.0, 1.75, 1.50, 0.19, 0.30),
    "suv": (0.22, 4.7, 1.90, 1.75, 0.25, 0.36),
    "van": (0.12, 5.0, 1.95, 2.10, 0.20, 0.33),
    "pickup": (0.10, 5.3, 1.95, 1.85, 0.30, 0.38),
    "truck": (0.09, 6.8, 2.30, 3.00, 0.40, 0.50),
    "bus": (0.07, 10.5, 2.50, 3.10, 0.30, 0.50),
}

#: name: (weight, RGB albedo) — real-world car colour frequencies, roughly.
PALETTE: dict[str, tuple[float, tuple[float, float, float]]] = {
    "white": (0.22, (0.86, 0.86, 0.84)),
    "black": (0.15, (0.06, 0.06, 0.07)),
    "silver": (0.14, (0.60, 0.61, 0.63)),
    "gray": (0.12, (0.36, 0.37, 0.39)),
    "red": (0.10, (0.62, 0.08, 0.07)),
    "blue": (0.10, (0.10, 0.20, 0.52)),
    "green": (0.04, (0.10, 0.30, 0.17)),
    "beige": (0.05, (0.72, 0.64, 0.48)),
    "yellow": (0.04, (0.86, 0.70, 0.10)),
    "brown": (0.04, (0.34, 0.21, 0.11)),
}
ACCENTS = np.array(
    [
        (0.9, 0.9, 0.9),
        (0.05, 0.05, 0.05),
        (0.8, 0.1, 0.1),
        (0.1, 0.3, 0.8),
        (0.95, 0.75, 0.1),
        (0.1, 0.6, 0.3),
        (0.95, 0.45, 0.1),
        (0.55, 0.2, 0.6),
    ],
    dtype=np.float32,
)
PLATES = np.array([(0.92, 0.92, 0.9), (0.95, 0.78, 0.1), (0.1, 0.25, 0.7)], dtype=np.float32)
RIMS = np.array([(0.7, 0.7, 0.72), (0.12, 0.12, 0.13), (0.75, 0.62, 0.3)], dtype=np.float32)
TYRE = np.array((0.05, 0.05, 0.05), dtype=np.float32)
TRIM = np.array((0.08, 0.08, 0.09), dtype=np.float32)
LIGHT = np.array((0.96, 0.95, 0.86), dtype=np.float32)
TAIL = np.array((0.75, 0.06, 0.05), dtype=np.float32)


#: Share of identities with a paint off the common palette: any hue, a wide range of
#: saturation and brightness. They make colour a fine-grained cue (two blues differ by shade),
#: which haze, by washing colours toward the airlight, degrades.
CUSTOM_PAINT = 0.6


def _custom_paint(rng: np.random.Generator) -> np.ndarray:
    """A colour drawn uniformly in hue, with saturation in [0.35, 0.95] and value in [0.3, 0.95]."""
    hue, sat, val = rng.random(), rng.uniform(0.35, 0.95), rng.uniform(0.3, 0.95)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)


def _pick(rng: np.random.Generator, table: dict) -> str:
    names = list(table)
    weights = np.array([table[n][0] for n in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _rgb(rng: np.random.Generator, base: Sequence[float], shade: float = 0.12) -> np.ndarray:
    color = np.asarray(base, dtype=np.float32) * rng.uniform(1 - shade, 1 + shade)
    color = color + rng.normal(0.0, 0.025, 3).astype(np.float32)
    return np.clip(color, 0.02, 0.97).astype(np.float32)


@dataclass(frozen=True)
class Vehicle:
    """One identity: body type, proportions and every fine-grained detail."""

    body: str
    length: float
    width: float
    height: float
    clearance: float
    wheel_radius: float
    color_name: str
    color: np.ndarray
    roof_color: np.ndarray
    trim_color: np.ndarray
    glass: np.ndarray
    rim: np.ndarray
    plate: np.ndarray
    plate_code: tuple[int, ...]
    cabin_shift: float
    stripes: tuple[tuple[float, float, np.ndarray], ...] = ()
    hood_stripe: np.ndarray | None = None
    decal: tuple[float, float, float, int, np.ndarray] | None = None  # x, y, size, shape, colour
    sunroof: bool = False
    roof_rack: bool = False
    roof_box: np.ndarray | None = None
    spoiler: bool = False
    head_style: int = 0
    tail_style: int = 0
    grille_style: int = 0
    cargo: np.ndarray | None = None
    logo: tuple[float, float, np.ndarray] | None = None  # band v0, v1, colour
    panel_van: bool = False


def sample_vehicle(rng: np.random.Generator) -> Vehicle:
    """Draw one identity."""
    body = _pick(rng, BODY_TYPES)
    _, length, width, height, clearance, wheel = BODY_TYPES[body]
    if rng.random() < CUSTOM_PAINT:
        color_name = "custom"
        color = _custom_paint(rng)
    else:
        color_name = _pick(rng, PALETTE)
        color = _rgb(rng, PALETTE[color_name][1])
    roof = color
    if body in ("sedan", "hatchback", "suv") and rng.random() < 0.15:
        roof = _rgb(rng, (0.06, 0.06, 0.07) if color_name != "black" else (0.86, 0.86, 0.84), 0.05)
    stripes: list[tuple[float, float, np.ndarray]] = []
    if body not in ("truck",) and rng.random() < 0.35:
        v0, w = rng.uniform(0.3, 0.7), rng.uniform(0.06, 0.16)
        stripes.append((v0, v0 + w, ACCENTS[rng.integers(len(ACCENTS))]))
        if rng.random() < 0.3:
            stripes.append((v0 + w + 0.05, v0 + 2 * w + 0.05, ACCENTS[rng.integers(len(ACCENTS))]))
    hood = ACCENTS[rng.integers(len(ACCENTS))] if rng.random() < 0.12 else None
    decal = None
    if rng.random() < 0.3:
        decal = (
            rng.uniform(-0.3, 0.3) * length,
            rng.uniform(0.45, 0.65),
            rng.uniform(0.18, 0.35),
            int(rng.integers(2)),
            ACCENTS[rng.integers(len(ACCENTS))],
        )
    car = body in ("sedan", "hatchback", "suv")
    cargo = logo = None
    if body == "truck":
        cargo = _rgb(rng, (0.88, 0.88, 0.86)) if rng.random() < 0.5 else _rgb(rng, color)
        if rng.random() < 0.6:
            v0 = rng.uniform(0.2, 0.6)
            logo = (v0, v0 + rng.uniform(0.1, 0.3), ACCENTS[rng.integers(len(ACCENTS))])
    if body == "bus":
        v0 = rng.uniform(0.2, 0.3)
        logo = (v0, v0 + rng.uniform(0.08, 0.16), ACCENTS[rng.integers(len(ACCENTS))])
    return Vehicle(
        body=body,
        length=length * rng.uniform(0.94, 1.06),
        width=width * rng.uniform(0.96, 1.04),
        height=height * rng.uniform(0.95, 1.05),
        clearance=clearance,
        wheel_radius=wheel * rng.uniform(0.95, 1.05),
        color_name=color_name,
        color=color,
        roof_color=roof,
        trim_color=TRIM if rng.random() < 0.6 else color * 0.85,
        glass=np.array((0.08, 0.1, 0.13), np.float32) * rng.uniform(0.6, 1.6),
        rim=RIMS[rng.choice(3, p=[0.6, 0.3, 0.1])],
        plate=PLATES[rng.choice(3, p=[0.5, 0.25, 0.25])],
        plate_code=tuple(int(b) for b in rng.integers(0, 2, 5)),
        cabin_shift=rng.uniform(-0.04, 0.04),
        stripes=tuple(stripes),
        hood_stripe=hood,
        decal=decal,
        sunroof=car and rng.random() < 0.2,
        roof_rack=body in ("suv", "hatchback", "van", "sedan") and rng.random() < 0.2,
        roof_box=(ACCENTS[rng.integers(2)] * 0.9 if car and rng.random() < 0.07 else None),
        spoiler=body in ("sedan", "hatchback") and rng.random() < 0.15,
        head_style=int(rng.integers(3)),
        tail_style=int(rng.integers(3)),
        grille_style=int(rng.integers(3)),
        cargo=cargo,
        logo=logo,
        panel_van=body == "van" and rng.random() < 0.5,
    )
