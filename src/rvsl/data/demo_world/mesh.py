"""Demo-world geometry: a vehicle as a few tapered boxes and four wheels, as planar faces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rvsl.data.demo_world.vehicles import BODY_TYPES, Vehicle


@dataclass(frozen=True)
class Part:
    """A box tapered toward its top face: bottom x-range [x0, x1], top [tx0, tx1], heights
    [y0, y1], half-widths zb (bottom) and zt (top) around zc. Every face is planar."""

    role: str
    x0: float
    x1: float
    tx0: float
    tx1: float
    y0: float
    y1: float
    zb: float
    zt: float
    zc: float = 0.0
    faces: tuple[str, ...] = ("front", "rear", "left", "right", "top")

    def vertices(self, face: str) -> np.ndarray:
        b = [(self.x0, -1), (self.x1, -1), (self.x1, 1), (self.x0, 1)]
        t = [(self.tx0, -1), (self.tx1, -1), (self.tx1, 1), (self.tx0, 1)]
        bot = [(x, self.y0, self.zc + s * self.zb) for x, s in b]
        top = [(x, self.y1, self.zc + s * self.zt) for x, s in t]
        idx = {
            "front": ((1, 2), (2, 1)),
            "rear": ((0, 3), (3, 0)),
            "left": ((0, 1), (1, 0)),
            "right": ((3, 2), (2, 3)),
        }
        if face == "top":
            return np.array(top, dtype=np.float64)
        (a, c), (d, e) = idx[face]
        return np.array([bot[a], bot[c], top[d], top[e]], dtype=np.float64)


def vehicle_parts(v: Vehicle) -> list[Part]:
    """The boxes of a vehicle in its own frame: x forward, y up, z to the right, metres."""
    L, W, H, c, r = v.length, v.width, v.height, v.clearance, v.wheel_radius
    hl, hw = L / 2, W / 2
    s = v.cabin_shift * L
    parts: list[Part] = []
    if v.body in ("sedan", "hatchback", "suv", "van", "pickup"):
        belt = {"sedan": 0.82, "hatchback": 0.84, "suv": 1.0, "van": 1.0, "pickup": 1.05}[v.body]
        belt = belt * H / BODY_TYPES[v.body][3]
        parts.append(Part("body", -hl, hl, -hl + 0.04, hl - 0.12, c, belt, hw, 0.97 * hw))
        cab = {
            "sedan": (-0.30, 0.16, -0.20, 0.02, 0.46, 0.40),
            "hatchback": (-0.47, 0.14, -0.44, -0.02, 0.46, 0.41),
            "suv": (-0.47, 0.17, -0.46, 0.04, 0.47, 0.43),
            "van": (-0.50, 0.30, -0.50, 0.15, 0.49, 0.47),
            "pickup": (-0.08, 0.20, -0.05, 0.08, 0.47, 0.43),
        }[v.body]
        bx0, bx1, tx0, tx1, zb, zt = cab
        shift = s if v.body in ("sedan", "suv") else 0.0
        parts.append(
            Part(
                "cabin",
                max(-hl, bx0 * L + shift),
                bx1 * L + shift,
                max(-hl, tx0 * L + shift),
                tx1 * L + shift,
                belt,
                H,
                zb * W,
                zt * W,
            )
        )
        if v.roof_box is not None:
            x0 = max(-hl, tx0 * L + shift) + 0.1
            parts.append(Part("roofbox", x0, x0 + 1.5, x0 + 0.1, x0 + 1.4, H, H + 0.35, 0.3, 0.27))
        if v.spoiler:
            parts.append(
                Part(
                    "spoiler",
                    -hl,
                    -hl + 0.25,
                    -hl - 0.02,
                    -hl + 0.22,
                    belt + 0.05,
                    belt + 0.13,
                    0.42 * W,
                    0.42 * W,
                )
            )
    elif v.body == "truck":
        parts.append(
            Part("cab", 0.21 * L, hl, 0.22 * L, hl - 0.25, c, 0.82 * H, hw * 0.98, hw * 0.93)
        )
        parts.append(Part("cargo", -hl, 0.2 * L, -hl, 0.2 * L, c + 0.2, H, hw, hw))
    else:  # bus
        parts.append(Part("bus", -hl, hl, -hl, hl - 0.15, c, H, hw, 0.97 * hw))
    if v.body == "bus":
        axles = (hl - 2.3, -hl + 2.6)
    elif v.body == "truck":
        axles = (hl - 1.0, -hl + 1.6)
    else:
        axles = (hl - 0.22 * L + 0.2, -hl + 0.22 * L - 0.15)
    tw = 0.3 if v.body in ("truck", "bus") else 0.22
    for x in axles:
        for side in (-1, 1):
            zc = side * (hw - tw / 2 + 0.03)
            outer = "right" if side > 0 else "left"
            parts.append(
                Part(
                    "wheel",
                    x - r,
                    x + r,
                    x - r,
                    x + r,
                    0.0,
                    2 * r,
                    tw / 2,
                    tw / 2,
                    zc,
                    faces=("front", "rear", outer),
                )
            )
    return parts


def _wheel_centres(parts: Sequence[Part]) -> np.ndarray:
    """(x, y) of each axle's wheel centre in the vehicle frame, for the wheel arches."""
    centres = {(0.5 * (p.x0 + p.x1), 0.5 * (p.y0 + p.y1)) for p in parts if p.role == "wheel"}
    return np.array(sorted(centres), dtype=np.float64)


@dataclass(frozen=True)
class Mesh:
    """A vehicle's faces, ready to render: per face its part and name, the four vertices
    (F, 4, 3) and outward unit normals (F, 3) in the vehicle frame, and the wheel centres."""

    faces: tuple[tuple[Part, str], ...]
    vertices: np.ndarray
    normals: np.ndarray
    arches: np.ndarray


def build_mesh(v: Vehicle) -> Mesh:
    """Faces of :func:`vehicle_parts`, computed once per identity."""
    parts = vehicle_parts(v)
    faces, verts, normals = [], [], []
    for part in parts:
        centre = 0.5 * (part.vertices("front").mean(0) + part.vertices("rear").mean(0))
        for face in part.faces:
            local = part.vertices(face)
            normal = np.cross(local[1] - local[0], local[3] - local[0])
            if normal @ (local.mean(0) - centre) < 0:
                normal = -normal
            faces.append((part, face))
            verts.append(local)
            normals.append(normal / np.linalg.norm(normal))
    return Mesh(tuple(faces), np.array(verts), np.array(normals), _wheel_centres(parts))
