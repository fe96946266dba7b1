"""Demo-world sensors and the "real" haze.

The synthetic camera only blurs. The "real" one (FVRID_real / FVRID_clear) adds a colour cast,
gamma, vignetting, blur, signal-dependent noise and a JPEG round trip (stored as ``.jpg``,
quality 60-85). FVRID_real adds a DIFFERENT haze (:func:`real_haze`): non-homogeneous density
(a smooth random field modulating beta), a warped depth response, tinted airlight with a
vertical gradient and forward-scatter blur. No clear twins. A third haze, of yet another kind,
is kept for a final test only (:mod:`.heldout`).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from rvsl.data.demo_world.cameras import Camera
from rvsl.data.haze import gaussian_blur, scatter, smooth_field, transmission


def syn_sensor(scene: np.ndarray, cam: Camera) -> np.ndarray:
    """The clean synthetic camera: optical blur only. Returns float (H, W, 3) in [0, 1]."""
    return np.clip(gaussian_blur(scene, cam.blur), 0.0, 1.0)


def real_sensor(scene: np.ndarray, cam: Camera, rng: np.random.Generator) -> bytes:
    """The "real" camera: colour cast and gamma, vignetting, blur, signal-dependent noise and a
    JPEG round trip (quality drawn in ``cam.jpeg``). Returns the JPEG bytes."""
    h, w = scene.shape[:2]
    img = np.clip(scene * cam.gains, 0.0, 1.0) ** cam.gamma
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy + 0.5) / h - 0.5) ** 2 + ((xx + 0.5) / w - 0.5) ** 2
    img = img * (1.0 - cam.vignette * 2.0 * r2)[..., None]
    img = gaussian_blur(img, cam.blur)
    read, shot = cam.noise
    sigma = np.sqrt(read**2 + (shot**2) * np.clip(img, 0, 1))
    img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    pixels = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(
        buf, format="JPEG", quality=int(rng.integers(cam.jpeg[0], cam.jpeg[1] + 1))
    )
    return buf.getvalue()


#: Airlight tints of the "real" haze: bluish, yellowish, brownish smog.
REAL_TINTS = np.array([(0.88, 0.96, 1.08), (1.08, 1.0, 0.8), (1.05, 0.95, 0.85)], np.float32)


def real_haze(scene: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The demo's "real" haze, deliberately unlike the synthetic one.

    Non-homogeneous density ``beta(x) = beta0 * exp(a * F(x))`` (F a smooth random field in
    [-1, 1], ``beta0 ~ U(1.2, 3.5)``, ``a ~ U(0.25, 0.6)``) on a warped depth ``d ** g``
    (``g ~ U(0.7, 1)``: haze reaches nearer); a tinted airlight (bluish, yellowish or brownish,
    level ``U(0.6, 0.9)``) brighter toward the top; and forward-scatter blur where
    transmission is low.
    """
    h, w = depth.shape
    field_ = smooth_field(rng, h, w, cells=int(rng.integers(3, 6)))
    beta = rng.uniform(1.2, 3.5) * np.exp(rng.uniform(0.25, 0.6) * field_)
    t = transmission(depth ** rng.uniform(0.7, 1.0), beta)
    tint = REAL_TINTS[rng.integers(len(REAL_TINTS))]
    airlight = rng.uniform(0.6, 0.9) * (1.0 + rng.uniform(0.5, 1.0) * (tint - 1.0))
    ramp = 1.0 + rng.uniform(0.0, 0.25) * (0.5 - (np.arange(h, dtype=np.float32) + 0.5) / h)
    airlight = np.clip(airlight[None, None, :] * ramp[:, None, None], 0.0, 1.0)
    hazy = scatter(scene, t, np.broadcast_to(airlight, scene.shape))
    k = (0.35 * (1.0 - t))[..., None]
    return np.clip((1 - k) * hazy + k * gaussian_blur(hazy, 1.0), 0.0, 1.0).astype(np.float32)
