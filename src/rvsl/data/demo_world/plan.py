"""Demo-world plan: the identity groups, each identity's shots, and the job that renders and
writes one identity's images.

Identities are disjoint between the five groups (syn train, syn test, real clear train, real
hazy train, real test). The real test identities are shared by REAL_CLEAR, REAL_FOGGY and
REAL_HELDOUT: the same renders, through the clear real pipeline, the real haze and the held-out
haze (:mod:`.heldout`, with their clean scenes and depths), so the gaps measure haze alone.
Query/gallery: per identity, one or two query images from one camera; the gallery holds 4-6
images from the other cameras and, sometimes, one from the query camera (ignored by the
protocol).

FVRID_syn holds clean renders (PNG) and their hazy twins by the scattering model on the exact
depth, ``beta ~ U(1, 5)``, gray ``A ~ U(0.4, 1)`` (:class:`rvsl.data.haze.HazeSynthesizer`).

Determinism: every identity and image draws from its own ``SeedSequence([seed, stream, pid,
...])``, so the bytes do not depend on the worker count.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rvsl.data.check import LAYOUT_FOLDERS
from rvsl.data.demo_world.cameras import NUM_CAMERAS, Camera, make_cameras
from rvsl.data.demo_world.heldout import heldout_haze, source_pngs
from rvsl.data.demo_world.mesh import build_mesh
from rvsl.data.demo_world.render import render_view
from rvsl.data.demo_world.sensors import real_haze, real_sensor, syn_sensor
from rvsl.data.demo_world.vehicles import sample_vehicle
from rvsl.data.fvrid import HELDOUT_DIR
from rvsl.data.haze import HazeSynthesizer


@dataclass(frozen=True)
class Group:
    """A block of identities and the folders its images go to."""

    name: str
    ids: int  # at scale 1
    test: bool
    real: bool


GROUPS = (
    Group("syn_train", 120, test=False, real=False),
    Group("syn_test", 40, test=True, real=False),
    Group("real_clear_train", 80, test=False, real=True),
    Group("real_foggy_train", 80, test=False, real=True),
    Group("real_test", 40, test=True, real=True),
)

#: Every split folder of the world, in table order.
WORLD_FOLDERS = LAYOUT_FOLDERS


def group_sizes(scale: float) -> dict[str, int]:
    """Identities per group at a scale (at least 2 per group)."""
    return {g.name: max(2, round(g.ids * scale)) for g in GROUPS}


@dataclass(frozen=True)
class _Job:
    root: Path
    group: Group
    pid: int
    seed: int
    size: tuple[int, int]
    images: tuple[int, int]


@functools.lru_cache(maxsize=4)
def _cameras(seed: int, real: bool) -> tuple[Camera, ...]:
    return tuple(make_cameras(seed, real))


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) for p in parts]))


def _shots(job: _Job, rng: np.random.Generator) -> list[tuple[str, int]]:
    """(split, 1-based camera) of each image of an identity."""
    n_cam = NUM_CAMERAS
    if not job.group.test:
        n = int(rng.integers(job.images[0], job.images[1] + 1))
        cams = rng.integers(0, n_cam, n)
        if len(set(cams.tolist())) == 1:
            cams[1] = (cams[0] + 1 + rng.integers(n_cam - 1)) % n_cam
        return [("train", int(c) + 1) for c in cams]
    qcam = int(rng.integers(n_cam))
    others = [c for c in range(n_cam) if c != qcam]
    shots = [("query", qcam + 1)] * (1 + int(rng.random() < 0.5))
    gallery = rng.choice(others, size=int(rng.integers(4, 7)), replace=True)
    shots += [("gallery", int(c) + 1) for c in gallery]
    if rng.random() < 0.4:
        shots.append(("gallery", qcam + 1))
    return shots


def _png(img: np.ndarray) -> tuple[bytes, np.ndarray]:
    pixels = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels


def _make_identity(job: _Job) -> list[tuple[str, int]]:
    """Render and write every image of one identity; return (folder, camera) per file written."""
    vehicle = sample_vehicle(_rng(job.seed, 1, job.pid))
    mesh = build_mesh(vehicle)
    shots = _shots(job, _rng(job.seed, 2, job.pid))
    synth = HazeSynthesizer()
    cameras = _cameras(job.seed, job.group.real)
    written = []
    for i, (split, cam_id) in enumerate(shots):
        cam = cameras[cam_id - 1]
        rng = _rng(job.seed, 3, job.pid, i)
        scene, depth = render_view(vehicle, cam, rng, job.size, mesh=mesh)
        stem = f"{job.pid:04d}_c{cam_id}_{i:03d}"
        if not job.group.real:
            clear_bytes, pixels = _png(syn_sensor(scene, cam))
            hazy, _, _ = synth(pixels.astype(np.float32) / 255.0, depth, rng)
            hazy_bytes, _ = _png(hazy)
            for kind, data in (("clear", clear_bytes), ("foggy", hazy_bytes)):
                folder = f"FVRID_syn/{split}_{kind}"
                (job.root / folder / f"{stem}.png").write_bytes(data)
                written.append((folder, cam_id))
            continue
        sensor_seed = int(rng.integers(2**31))
        outputs, sources = [], []
        if job.group.name in ("real_clear_train", "real_test"):
            outputs.append((f"FVRID_clear/{split}_clear", scene))
        if job.group.name in ("real_foggy_train", "real_test"):
            outputs.append((f"FVRID_real/{split}_foggy", real_haze(scene, depth, rng)))
        if job.group.name == "real_test":  # held-out haze: its own stream, the same sensor
            heldout = heldout_haze(scene, depth, _rng(job.seed, 4, job.pid, i))
            outputs.append((f"{HELDOUT_DIR}/{split}_foggy", heldout))
            sources = source_pngs(split, scene, depth)
        for folder, image in outputs:
            data = real_sensor(image, cam, _rng(sensor_seed))
            (job.root / folder / f"{stem}.jpg").write_bytes(data)
            written.append((folder, cam_id))
        for folder, data in sources:
            (job.root / folder / f"{stem}.png").write_bytes(data)
            written.append((folder, cam_id))
    return written
