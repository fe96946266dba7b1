"""Demo-world renderer: one vehicle in one camera's scene, as a crop with its exact depth.

Crops are framed like detector boxes, resized to the image size. Depth is exact per pixel from
the ray caster (a z-buffer over planar faces plus the analytic ground, backdrop and sky), as the
Euclidean distance divided by ``FAR`` (45 m), clipped to 1 (sky). Vehicles sit at about
0.15-0.3, the backdrop at 0.4-0.9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rvsl.data.demo_world.cameras import Camera
from rvsl.data.demo_world.mesh import Mesh, build_mesh
from rvsl.data.demo_world.textures import _texture
from rvsl.data.demo_world.vehicles import Vehicle

#: Depth normalisation: distance in metres / FAR, clipped to [0, 1].
FAR = 45.0
SUPERSAMPLE = 2


def _rot(heading_deg: float) -> np.ndarray:
    """Columns: the vehicle's forward, up and right axes in world coordinates."""
    a = math.radians(heading_deg)
    return np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])


@dataclass(frozen=True)
class _View:
    C: np.ndarray  # camera centre
    F: np.ndarray  # forward, right, up (camera basis)
    Rt: np.ndarray
    U: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    rot: np.ndarray  # vehicle -> world rotation
    T: np.ndarray  # vehicle origin in world
    heading: float


def _project(view: _View, pts: np.ndarray) -> np.ndarray:
    rel = pts - view.C
    zc = rel @ view.F
    return np.stack(
        [view.cx + view.fx * (rel @ view.Rt) / zc, view.cy - view.fy * (rel @ view.U) / zc], -1
    )


def _pose(v: Vehicle, mesh: Mesh, cam: Camera, rng: np.random.Generator, h: int, w: int) -> _View:
    """Place the vehicle in the camera's scene and frame it like a detector crop: the box
    around its projection fills 80-94% of each image side (aspect change capped at 1.7)."""
    heading = cam.heading + rng.uniform(-15, 15) + (180.0 if rng.random() < cam.reverse_p else 0.0)
    el = math.radians(cam.elevation)
    scale = (max(v.length, 4.6) / 4.6) ** 0.7
    dist = cam.distance * scale
    C = np.array([0.0, 0.8 + dist * math.sin(el), 0.0])
    F = np.array([math.cos(el), -math.sin(el), 0.0])
    Rt = np.array([0.0, 0.0, 1.0])
    U = np.array([math.sin(el), math.cos(el), 0.0])
    T = np.array([dist * math.cos(el) * rng.uniform(0.92, 1.08), 0.0, rng.uniform(-1.2, 1.2)])
    rot = _rot(heading)
    world = mesh.vertices.reshape(-1, 3) @ rot.T + T
    unit = _View(C, F, Rt, U, 1.0, 1.0, 0.0, 0.0, rot, T, heading)
    uv = _project(unit, world)
    (u0, v0), (u1, v1) = uv.min(0), uv.max(0)
    fx = rng.uniform(0.8, 0.94) * w / (u1 - u0)
    fy = rng.uniform(0.8, 0.94) * h / (v1 - v0)
    ratio = 1.7
    fx, fy = min(fx, ratio * fy), min(fy, ratio * fx)
    cx = w / 2 - fx * (u0 + u1) / 2 + rng.uniform(-0.03, 0.03) * w
    cy = h / 2 - fy * (v0 + v1) / 2 + rng.uniform(-0.03, 0.03) * h
    return _View(C, F, Rt, U, fx, fy, cx, cy, rot, T, heading)


def _background(
    view: _View, cam: Camera, v: Vehicle, rx: np.ndarray, ry: np.ndarray, rz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Colour (n, 3) and distance (n,) of the ground, backdrop, skyline or sky seen along each
    ray (unit directions rx, ry, rz) that misses the vehicle."""
    C = view.C
    # sky with a distant skyline
    k = np.clip(ry / 0.5, 0, 1)[:, None]  # sine of the elevation
    color = cam.sky_horizon * (1 - k) + cam.sky_top * k
    dist = np.full(len(rx), FAR)
    base, amp, freq, phase = cam.skyline
    with np.errstate(divide="ignore", invalid="ignore"):
        across = np.where(rx > 1e-6, rz / rx, 0.0)  # tangent of the azimuth
    skyline = (ry < base + amp * np.sin(across * freq + phase)) & (ry > -0.3)
    color[skyline] = cam.skyline_color
    dist[skyline] = 0.9 * FAR
    # the backdrop plane facing the camera, and the ground
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(ry < -1e-6, -C[1] / ry, np.inf)
        tb = np.where(rx > 1e-6, (view.T[0] + cam.back_distance - C[0]) / rx, np.inf)
        by, bz = C[1] + tb * ry, C[2] + tb * rz
    fin = np.isfinite(tb)
    bz = np.where(fin, bz, 0.0)
    block = np.floor((bz + 1000.0) / cam.back_block).astype(np.int64) % len(cam.back_heights)
    top = cam.back_heights[block]
    if cam.backdrop == "trees":
        top = top + 1.2 * np.sin(bz * 0.9 + block) + 0.6 * np.sin(bz * 2.3)
    hit_b = fin & (by >= 0) & (by <= top) & (tb < tg)
    hit_g = np.isfinite(tg) & ~hit_b & (tg < FAR)

    g = np.nonzero(hit_g)[0]
    t = tg[g]
    gx, gz = C[0] + t * rx[g], C[2] + t * rz[g]
    road = math.radians(cam.heading)
    ax, az = math.cos(road), math.sin(road)
    along = (gx - view.T[0]) * ax + gz * az
    lateral = -(gx - view.T[0]) * az + gz * ax
    tex = cam.texture[
        np.floor(gx * 2).astype(np.int64) % 32, np.floor(gz * 2).astype(np.int64) % 32
    ]
    ground = cam.asphalt * tex[:, None]
    lane = np.mod(lateral - cam.lane_offset, 3.5)
    lane = (np.minimum(lane, 3.5 - lane) < 0.08) & (np.mod(along, 9.0) < 4.5)
    lane &= np.abs(lateral) < cam.road_half - 0.6
    lane |= np.abs(np.abs(lateral) - (cam.road_half - 0.3)) < 0.08
    ground[lane] = 0.85
    walk = np.abs(lateral) > cam.road_half
    seams = (np.mod(along, 1.5) < 0.06) | (np.mod(lateral, 1.5) < 0.06)
    ground[walk] = cam.sidewalk * (tex[walk] * np.where(seams[walk], 0.8, 1.0))[:, None]
    vx = (gx - view.T[0]) * view.rot[0, 0] + (gz - view.T[2]) * view.rot[2, 0]
    vz = (gx - view.T[0]) * view.rot[0, 2] + (gz - view.T[2]) * view.rot[2, 2]
    sx = np.clip((v.length / 2 + 0.35 - np.abs(vx)) / 0.5, 0, 1)
    sz = np.clip((v.width / 2 + 0.3 - np.abs(vz)) / 0.4, 0, 1)
    light = cam.ambient + cam.sun_strength * max(0.0, float(cam.sun[1]))
    color[g] = ground * ((1 - 0.6 * sx * sz) * light)[:, None] * cam.tint
    dist[g] = t

    b = np.nonzero(hit_b)[0]
    by, bz, blk = by[b], bz[b], block[b]
    bcol = cam.back_colors[blk]
    if cam.backdrop == "buildings":
        wz, wy = np.mod(bz + 1000.0, 2.6), np.mod(by, 3.0)
        window = (wz > 0.7) & (wz < 1.9) & (wy > 1.0) & (wy < 2.3) & (by > 2.0)
        cell = np.floor(bz / 2.6).astype(np.int64) * 7 + np.floor(by / 3.0).astype(np.int64) * 3
        lit = cell % 5 == 0
        bcol[window & lit] = (0.85, 0.8, 0.6)
        bcol[window & ~lit] = (0.12, 0.15, 0.2)
    elif cam.backdrop == "trees":
        bcol = bcol * (0.8 + 0.2 * np.sin(bz * 6.1) * np.sin(by * 5.3))[:, None]
        bcol[(np.mod(bz, 5.0) < 0.35) & (by < 2.2)] = (0.25, 0.17, 0.1)
    else:
        joint = np.mod(bz + 0.3 * (np.floor(by / 0.3) % 2), 0.6) < 0.04
        bcol[(np.mod(by, 0.3) < 0.04) | joint] = (0.7, 0.68, 0.64)
    blight = cam.ambient + cam.sun_strength * max(0.0, float(-cam.sun[0]))
    color[b] = bcol * blight * cam.tint
    dist[b] = tb[b]
    return color, dist


def render_view(
    v: Vehicle,
    cam: Camera,
    rng: np.random.Generator,
    size: tuple[int, int],
    ss: int = SUPERSAMPLE,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one crop: the scene colour (H, W, 3) in [0, 1] (before any sensor) and the exact
    normalised depth (H, W) in [0, 1], both averaged over ``ss x ss`` sub-pixels.

    The vehicle is drawn first through a z-buffer over its planar faces (back faces culled,
    ray-plane depth per pixel); the rays that miss it see the analytic background, which is
    always farther (the vehicle stands on the ground, between camera and backdrop). Pass the
    identity's ``mesh`` (:func:`build_mesh`) to skip rebuilding it.
    """
    mesh = mesh or build_mesh(v)
    h, w = size
    H, W = h * ss, w * ss
    view = _pose(v, mesh, cam, rng, h, w)
    view = _View(
        view.C,
        view.F,
        view.Rt,
        view.U,
        view.fx * ss,
        view.fy * ss,
        view.cx * ss,
        view.cy * ss,
        view.rot,
        view.T,
        view.heading,
    )
    px = np.arange(W, dtype=np.float32) + 0.5
    py = np.arange(H, dtype=np.float32) + 0.5
    cols, rows = (px - view.cx) / view.fx, (view.cy - py) / view.fy
    # unit ray directions as three (H, W) float32 planes
    rx, ry, rz = (
        (view.F[i] + cols[None, :] * view.Rt[i] + rows[:, None] * view.U[i]).astype(np.float32)
        for i in range(3)
    )
    inv = 1.0 / np.sqrt(rx * rx + ry * ry + rz * rz)
    rx, ry, rz = rx * inv, ry * inv, rz * inv
    # The background is smooth: cast it at the output resolution (one ray per pixel centre),
    # then upsample it into the colour and depth buffers the vehicle is drawn over.
    lx, ly, lz = (_downsample(p, ss) for p in (rx, ry, rz))
    inv = 1.0 / np.sqrt(lx * lx + ly * ly + lz * lz)
    bg_color, bg_dist = _background(
        view, cam, v, (lx * inv).ravel(), (ly * inv).ravel(), (lz * inv).ravel()
    )
    color = np.repeat(np.repeat(bg_color.reshape(h, w, 3), ss, 0), ss, 1).astype(np.float32)
    zbuf = np.repeat(np.repeat(bg_dist.reshape(h, w), ss, 0), ss, 1).astype(np.float32)
    color_flat, z_flat = color.reshape(-1, 3), zbuf.reshape(-1)
    # ray directions in the vehicle frame, flat, to find the texture point of a hit pixel
    vrays = [
        (rx * view.rot[0, i] + ry * view.rot[1, i] + rz * view.rot[2, i]).ravel() for i in range(3)
    ]
    exposure = rng.uniform(0.9, 1.1)
    reflect = 0.5 * cam.sky_horizon

    # every face at once: world vertices and normals, culling, projection, edge equations
    verts = mesh.vertices @ view.rot.T + view.T  # (F, 4, 3)
    normals = mesh.normals @ view.rot.T
    visible = np.einsum("fc,fc->f", normals, view.C - verts.mean(1)) > 0
    rel = verts - view.C
    zc = rel @ view.F
    pix = np.stack(
        [view.cx + view.fx * (rel @ view.Rt) / zc, view.cy - view.fy * (rel @ view.U) / zc], -1
    )
    nxt = np.roll(pix, -1, axis=1)
    area = np.sum(pix[..., 0] * nxt[..., 1] - nxt[..., 0] * pix[..., 1], axis=1)
    sign = np.where(area > 0, 1.0, -1.0)[:, None]
    ea = -(nxt[..., 1] - pix[..., 1]) * sign  # inside: ea * x + eb * y + ec >= 0 for all edges
    eb = (nxt[..., 0] - pix[..., 0]) * sign
    ec = -(ea * pix[..., 0] + eb * pix[..., 1])
    lo = np.maximum(np.floor(pix.min(1)).astype(int), 0)
    hi = np.minimum(np.ceil(pix.max(1)).astype(int) + 1, (W, H))
    offset = np.einsum("fc,fc->f", normals, verts[:, 0] - view.C)
    light = cam.ambient + cam.sun_strength * np.maximum(0.0, normals @ cam.sun)
    origin = (view.C - view.T) @ view.rot  # camera centre in the vehicle frame
    for f in np.nonzero(visible & np.all(lo < hi, axis=1))[0]:
        (c0, r0), (c1, r1) = lo[f], hi[f]
        gx, gy = px[c0:c1], py[r0:r1, None]
        inside = (ea[f, 0] * gx + ec[f, 0]) + eb[f, 0] * gy >= 0
        for k in range(1, 4):
            inside &= (ea[f, k] * gx + ec[f, k]) + eb[f, k] * gy >= 0
        n = normals[f]
        box = (slice(r0, r1), slice(c0, c1))
        t = offset[f] / (rx[box] * n[0] + ry[box] * n[1] + rz[box] * n[2])
        inside &= t > 0
        inside &= t < zbuf[box]
        rr, cc = np.nonzero(inside)
        if len(rr) == 0:
            continue
        ts = t[rr, cc]
        flat = (rr + r0) * W + (cc + c0)
        x, y, z = (origin[i] + ts * vrays[i][flat] for i in range(3))
        part, face = mesh.faces[f]
        albedo, gloss, alpha = _texture(v, part, face, x, y, z, mesh.arches)
        if not alpha.all():
            flat, ts, albedo, gloss = flat[alpha], ts[alpha], albedo[alpha], gloss[alpha]
        color_flat[flat] = albedo * (light[f] * cam.tint) + gloss[:, None] * reflect
        z_flat[flat] = ts
    color = _downsample(color, ss) * exposure
    depth = _downsample(np.minimum(zbuf / FAR, 1.0), ss)
    return np.clip(color, 0.0, 1.0).astype(np.float32), depth.astype(np.float32)


def _downsample(image: np.ndarray, ss: int) -> np.ndarray:
    """Mean over ``ss x ss`` blocks of the first two axes (strided sums: fast)."""
    out = sum(image[i::ss, j::ss] for i in range(ss) for j in range(ss))
    return out / (ss * ss)
