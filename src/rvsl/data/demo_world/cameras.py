"""Demo-world cameras: five per world, each a fixed scene.

A scene is a road with lanes and a sidewalk, a backdrop of buildings, trees or a wall, a distant
skyline and sky; each camera has its own viewpoint archetype (front, rear, side, three-quarter
views at different heights), lighting, colour temperature and blur. The "real" cameras (a
second set, other scenes) also carry the sensor settings of :func:`.sensors.real_sensor`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rvsl.data.demo_world.vehicles import _rgb
from rvsl.data.haze import gaussian_blur

#: Cameras per world, synthetic and real alike.
NUM_CAMERAS = 5

#: Viewpoint archetypes: (vehicle heading in degrees, 180 = facing the camera; camera
#: elevation in degrees; camera distance in metres for a 4.6 m car).
VIEWPOINTS = (
    (180.0, 28.0, 11.0),
    (0.0, 22.0, 10.0),
    (145.0, 14.0, 8.0),
    (-35.0, 16.0, 9.0),
    (95.0, 6.0, 9.0),
    (215.0, 34.0, 12.0),
    (30.0, 10.0, 8.0),
)
BACKDROPS = ("buildings", "trees", "wall")


@dataclass(frozen=True)
class Camera:
    """One camera: a fixed scene, a viewpoint archetype, lighting and a sensor."""

    index: int  # 1-based, as in file names
    real: bool
    heading: float
    elevation: float
    distance: float
    reverse_p: float
    sun: np.ndarray
    sun_strength: float
    ambient: float
    tint: np.ndarray
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    skyline: tuple[float, float, float, float]  # base, amplitude, frequency, phase (radians)
    skyline_color: np.ndarray
    asphalt: np.ndarray
    sidewalk: np.ndarray
    road_half: float
    lane_offset: float
    backdrop: str
    back_distance: float
    back_colors: np.ndarray
    back_heights: np.ndarray
    back_block: float
    blur: float
    texture: np.ndarray  # 32 x 32 ground texture, mean 1
    # real sensor only
    gains: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    gamma: float = 1.0
    vignette: float = 0.0
    noise: tuple[float, float] = (0.0, 0.0)
    jpeg: tuple[int, int] = (95, 95)


def make_cameras(seed: int, real: bool, n: int = NUM_CAMERAS) -> list[Camera]:
    """The ``n`` cameras of the synthetic (``real=False``) or the real world, from the seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7, int(real)]))
    order = rng.permutation(len(VIEWPOINTS))
    cams = []
    for i in range(n):
        heading, elev, dist = VIEWPOINTS[order[i % len(VIEWPOINTS)]]
        sun_el, sun_az = np.radians(rng.uniform(25, 70)), np.radians(rng.uniform(0, 360))
        warm, cool = np.array((1.06, 1.0, 0.88)), np.array((0.9, 0.98, 1.1))
        overcast = rng.random() < 0.3
        horizon = _rgb(rng, (0.74, 0.8, 0.88) if not overcast else (0.72, 0.73, 0.75), 0.06)
        top = _rgb(rng, (0.32, 0.52, 0.85) if not overcast else (0.6, 0.62, 0.66), 0.08)
        backdrop = BACKDROPS[int(rng.integers(len(BACKDROPS)))]
        if backdrop == "buildings":
            colors = np.stack([_rgb(rng, rng.uniform(0.3, 0.85, 3), 0.05) for _ in range(6)])
            heights = rng.uniform(6, 20, 6)
        elif backdrop == "trees":
            colors = np.stack([_rgb(rng, (0.16, 0.32, 0.12), 0.25) for _ in range(6)])
            heights = rng.uniform(5, 10, 6)
        else:
            colors = np.stack([_rgb(rng, (0.55, 0.3, 0.22), 0.2) for _ in range(6)])
            heights = rng.uniform(2.0, 3.5, 6)
        tex = rng.uniform(0.85, 1.15, (32, 32)).astype(np.float32)
        tex = gaussian_blur(tex, 0.8, channels_last=False)
        cam = dict(
            index=i + 1,
            real=real,
            heading=heading + rng.uniform(-10, 10),
            elevation=elev + rng.uniform(-3, 3),
            distance=dist * rng.uniform(0.85, 1.15),
            reverse_p=rng.uniform(0.1, 0.35),
            sun=np.array(
                (np.cos(sun_el) * np.cos(sun_az), np.sin(sun_el), np.cos(sun_el) * np.sin(sun_az))
            ),
            sun_strength=rng.uniform(0.25, 0.4) if overcast else rng.uniform(0.5, 0.8),
            ambient=rng.uniform(0.55, 0.7) if overcast else rng.uniform(0.35, 0.5),
            tint=(warm + (cool - warm) * rng.uniform()).astype(np.float32),
            sky_top=top,
            sky_horizon=horizon,
            skyline=(
                rng.uniform(0.0, 0.06),
                rng.uniform(0.01, 0.05),
                rng.uniform(3, 12),
                rng.uniform(0, 2 * np.pi),
            ),
            skyline_color=_rgb(rng, (0.45, 0.5, 0.55), 0.1),
            asphalt=_rgb(rng, (0.3, 0.3, 0.31), 0.2),
            sidewalk=_rgb(rng, (0.62, 0.6, 0.56), 0.1),
            road_half=rng.uniform(5.5, 10.0),
            lane_offset=rng.uniform(0, 3.5),
            backdrop=backdrop,
            back_distance=rng.uniform(10, 25),
            back_colors=colors,
            back_heights=heights,
            back_block=rng.uniform(6, 12),
            blur=rng.uniform(0.35, 0.8) if real else rng.uniform(0.0, 0.45),
            texture=tex,
        )
        if real:
            cam.update(
                gains=(rng.uniform(0.9, 1.1, 3) / 1.0).astype(np.float32),
                gamma=rng.uniform(0.85, 1.15),
                vignette=rng.uniform(0.05, 0.3),
                noise=(rng.uniform(0.006, 0.015), rng.uniform(0.015, 0.035)),
                jpeg=(60, 85),
            )
        cams.append(Camera(**cam))
    return cams
