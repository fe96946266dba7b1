"""Demo-world paint: the albedo, gloss and opacity of a point on a vehicle face — glass,
lights, grille, plate code, stripes, decal, roof details, wheel rims and arches."""

from __future__ import annotations

import numpy as np

from rvsl.data.demo_world.mesh import Part
from rvsl.data.demo_world.vehicles import LIGHT, TAIL, TYRE, Vehicle


def _band(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (a >= lo) & (a <= hi)


def _box(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return _band(u, u0, u1) & _band(v, v0, v1)


def _paint(albedo: np.ndarray, gloss: np.ndarray, mask: np.ndarray, color, shine: float) -> None:
    albedo[mask] = color
    gloss[mask] = shine


def _plate(v: Vehicle, u, w, albedo, gloss, v0: float, v1: float, u0=0.36, u1=0.64) -> None:
    plate = _box(u, w, u0, u1, v0, v1)
    _paint(albedo, gloss, plate, v.plate, 0.1)
    cell = np.clip(((u - u0) / (u1 - u0) * 5).astype(int), 0, 4)
    local = (u - u0) / (u1 - u0) * 5 - cell
    code = np.asarray(v.plate_code)[cell] == 1
    ink = (0.9, 0.9, 0.9) if v.plate[2] > 0.5 else (0.05, 0.05, 0.05)
    mid = v0 + 0.2 * (v1 - v0), v1 - 0.2 * (v1 - v0)
    _paint(albedo, gloss, plate & code & _band(local, 0.2, 0.8) & _band(w, *mid), ink, 0.1)


def _front_lights(v: Vehicle, u, w, albedo, gloss, lo: float, hi: float) -> None:
    span = hi - lo
    if v.head_style == 0:
        m = (_band(u, 0.05, 0.25) | _band(u, 0.75, 0.95)) & _band(w, lo, hi)
    elif v.head_style == 1:
        m = (_band(u, 0.03, 0.3) | _band(u, 0.7, 0.97)) & _band(w, lo + 0.5 * span, hi)
    else:
        m = (
            (np.minimum(np.abs(u - 0.14), np.abs(u - 0.86)) / 0.08) ** 2
            + ((w - lo - 0.5 * span) / (0.5 * span)) ** 2
        ) <= 1
    _paint(albedo, gloss, m, LIGHT, 0.4)


def _tail_lights(v: Vehicle, u, w, albedo, gloss, lo: float, hi: float) -> None:
    span = hi - lo
    if v.tail_style == 0:
        m = (_band(u, 0.03, 0.22) | _band(u, 0.78, 0.97)) & _band(w, lo, hi)
    elif v.tail_style == 1:
        m = _band(u, 0.04, 0.96) & _band(w, lo + 0.35 * span, lo + 0.65 * span)
    else:
        m = (_band(u, 0.03, 0.12) | _band(u, 0.88, 0.97)) & _band(w, lo - 0.5 * span, hi)
    _paint(albedo, gloss, m, TAIL, 0.3)


def _grille(v: Vehicle, u, w, albedo, gloss, lo: float, hi: float) -> None:
    span = hi - lo
    box = [
        (0.3, 0.7, lo, hi),
        (0.4, 0.6, lo - 0.2 * span, hi + 0.1 * span),
        (0.2, 0.8, lo + 0.35 * span, lo + 0.65 * span),
    ][v.grille_style]
    _paint(albedo, gloss, _box(u, w, *box), (0.05, 0.05, 0.05), 0.1)


def _texture(
    v: Vehicle,
    part: Part,
    face: str,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    arches: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Albedo (n, 3), gloss (n,) and opacity (n,) of the points (x, y, z) on one face;
    ``arches`` are the wheel centres (x, y), darkened around on the sides."""
    n = len(x)
    fy = np.clip((y - part.y0) / (part.y1 - part.y0), 0.0, 1.0)
    xlo = part.x0 + (part.tx0 - part.x0) * fy
    xhi = part.x1 + (part.tx1 - part.x1) * fy
    zh = part.zb + (part.zt - part.zb) * fy
    zr = z - part.zc
    if face in ("left", "right"):
        u, w = (x - xlo) / np.maximum(xhi - xlo, 1e-6), fy
    elif face == "front":
        u, w = (zh - zr) / (2 * zh), fy
    elif face == "rear":
        u, w = (zr + zh) / (2 * zh), fy
    else:
        u = (x - part.tx0) / max(part.tx1 - part.tx0, 1e-6)
        w = (zr + part.zt) / (2 * part.zt)
    role = part.role
    base = {
        "cabin": v.color,
        "cargo": v.cargo if v.cargo is not None else v.color,
        "roofbox": v.roof_box if v.roof_box is not None else v.color,
        "wheel": TYRE,
    }.get(role, v.color)
    albedo = np.broadcast_to(np.asarray(base, np.float32), (n, 3)).copy()
    gloss = np.full(n, 0.02 if role == "wheel" else 0.08, np.float32)
    alpha = np.ones(n, dtype=bool)
    side = face in ("left", "right")

    if role == "wheel":
        if side:
            rho = 2 * np.hypot(u - 0.5, w - 0.5)
            alpha = rho <= 1.0
            _paint(albedo, gloss, rho <= 0.62, v.rim, 0.25)
            _paint(albedo, gloss, rho <= 0.16, v.rim * 0.5, 0.1)
        return albedo, gloss, alpha

    if role in ("body", "cab", "bus", "cargo") and side:
        d = np.min(np.hypot(x[:, None] - arches[None, :, 0], y[:, None] - arches[None, :, 1]), 1)
        _paint(albedo, gloss, d < 1.18 * v.wheel_radius, (0.03, 0.03, 0.03), 0.0)

    if role == "body":
        if side:
            _paint(albedo, gloss, w < 0.13, v.trim_color, 0.03)
            for v0, v1, col in v.stripes:
                _paint(albedo, gloss, _band(w, v0, v1), col, 0.1)
            if v.decal is not None:
                dx, dv, size, shape, col = v.decal
                height = part.y1 - part.y0
                du, dw = (x - dx) / size, (y - part.y0 - dv * height) / size
                m = (du**2 + dw**2 <= 1) if shape == 0 else (np.abs(du) <= 1) & (np.abs(dw) <= 0.6)
                _paint(albedo, gloss, m, col, 0.1)
        elif face == "front":
            _paint(albedo, gloss, w < 0.28, v.trim_color, 0.05)
            _grille(v, u, w, albedo, gloss, 0.4, 0.62)
            _front_lights(v, u, w, albedo, gloss, 0.6, 0.86)
            _plate(v, u, w, albedo, gloss, 0.08, 0.25)
        elif face == "rear":
            _paint(albedo, gloss, w < 0.25, v.trim_color, 0.05)
            _tail_lights(v, u, w, albedo, gloss, 0.62, 0.86)
            _plate(v, u, w, albedo, gloss, 0.3, 0.47)
        else:
            if v.hood_stripe is not None:
                _paint(albedo, gloss, _band(np.abs(w - 0.5), 0.03, 0.1), v.hood_stripe, 0.1)
            if v.body == "pickup":
                bed = (x < part.tx0 + 0.58 * (part.tx1 - part.tx0)) & _band(w, 0.06, 0.94)
                _paint(albedo, gloss, bed & (u > 0.02), (0.08, 0.08, 0.08), 0.0)
    elif role == "cabin":
        if side:
            margin = 0.1 if v.body != "van" else 0.05
            glass = _box(u, w, margin, 1 - margin, 0.12, 0.86)
            if v.panel_van:
                glass &= u > 0.72
            if v.body in ("sedan", "suv", "van"):
                glass &= np.abs(u - 0.5) > 0.03
            _paint(albedo, gloss, glass, v.glass, 0.45)
        elif face == "front":
            _paint(albedo, gloss, _box(u, w, 0.05, 0.95, 0.06, 0.9), v.glass, 0.5)
        elif face == "rear":
            lo = 0.5 if v.body == "van" else 0.2
            _paint(albedo, gloss, _box(u, w, 0.1, 0.9, lo, 0.86), v.glass, 0.45)
        else:
            albedo[:] = v.roof_color
            if v.sunroof:
                _paint(albedo, gloss, _box(u, w, 0.35, 0.75, 0.25, 0.75), v.glass, 0.5)
            if v.hood_stripe is not None:
                _paint(albedo, gloss, _band(np.abs(w - 0.5), 0.03, 0.1), v.hood_stripe, 0.1)
            if v.roof_rack:
                rack = (w < 0.1) | (w > 0.9) | (np.abs(u - 0.25) < 0.04) | (np.abs(u - 0.75) < 0.04)
                _paint(albedo, gloss, rack, (0.15, 0.15, 0.16), 0.2)
    elif role == "cab":
        if side:
            _paint(albedo, gloss, w < 0.12, v.trim_color, 0.03)
            _paint(albedo, gloss, _box(u, w, 0.5, 0.9, 0.6, 0.9), v.glass, 0.45)
        elif face == "front":
            _paint(albedo, gloss, _box(u, w, 0.05, 0.95, 0.58, 0.93), v.glass, 0.5)
            _paint(albedo, gloss, w < 0.14, v.trim_color, 0.05)
            _grille(v, u, w, albedo, gloss, 0.22, 0.45)
            _front_lights(v, u, w, albedo, gloss, 0.2, 0.33)
            _plate(v, u, w, albedo, gloss, 0.02, 0.12)
    elif role == "cargo":
        if side and v.logo is not None:
            _paint(
                albedo, gloss, _band(w, v.logo[0], v.logo[1]) & _band(u, 0.05, 0.95), v.logo[2], 0.1
            )
        elif face == "rear":
            _paint(albedo, gloss, np.abs(u - 0.5) < 0.012, (0.2, 0.2, 0.2), 0.0)
            _tail_lights(v, u, w, albedo, gloss, 0.03, 0.1)
            _plate(v, u, w, albedo, gloss, 0.01, 0.07)
        elif face == "top":
            albedo *= 0.93
    elif role == "bus":
        if side:
            glass = _band(w, 0.55, 0.88) & _band(u, 0.03, 0.97)
            pillar = np.mod(x - part.x0, 1.3) < 0.14
            _paint(albedo, gloss, glass & ~pillar, v.glass, 0.45)
            if v.logo is not None:
                _paint(albedo, gloss, _band(w, v.logo[0], v.logo[1]), v.logo[2], 0.1)
            _paint(albedo, gloss, w < 0.08, v.trim_color, 0.03)
        elif face == "front":
            _paint(albedo, gloss, _box(u, w, 0.04, 0.96, 0.42, 0.93), v.glass, 0.5)
            _paint(albedo, gloss, _box(u, w, 0.1, 0.9, 0.86, 0.93), (0.95, 0.6, 0.1), 0.3)
            _front_lights(v, u, w, albedo, gloss, 0.12, 0.22)
            _plate(v, u, w, albedo, gloss, 0.03, 0.1)
        elif face == "rear":
            _paint(albedo, gloss, _box(u, w, 0.1, 0.9, 0.62, 0.86), v.glass, 0.45)
            _tail_lights(v, u, w, albedo, gloss, 0.12, 0.3)
            _plate(v, u, w, albedo, gloss, 0.03, 0.1)
        elif v.logo is not None:
            albedo *= 0.9
    elif role == "spoiler":
        albedo[:] = v.trim_color
    return albedo, gloss, alpha
