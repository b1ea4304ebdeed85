"""Procedural colonoscopy phantom: one image from one seed.

The scene is built in float32 RGB in [0, 1] on a grid of normalised coordinates in [-1, 1]:
mucosa colour with low-frequency shading, a fine vessel network, haustral folds around a dark
lumen, an optional polyp (sessile or pedunculated dome, Lambertian shading, contact shadow),
specular highlights and vignetting inside a circular field stop.

Pathology follows the visual cues of the NICE classification:
- AD (NICE type 2): browner than the background, brown vessels around oval / tubular / branched
  white structures;
- NON_AD (NICE type 1): same colour or lighter, uniform dark or white spots, no or isolated lacy
  vessels.
Each cue's strength is drawn per image and a share of images is ambiguous (weak cues, or a cue of
the other class), so the classes overlap the way real AD / NON_AD images do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

QUALITIES = ("sharp", "blurred", "overexposed")
PATHOLOGIES = ("AD", "NON_AD")


@dataclass(frozen=True)
class PhantomSpec:
    """What to draw; everything else is drawn from the image's own seed."""

    size: int = 256
    polyp: bool = True
    pathology: str | None = None  # AD, NON_AD, or None (a polyp whose type is drawn at random)
    quality: str = "sharp"
    ambiguous_share: float = 0.25  # share of polyps whose cues are weak or borrowed from the other class
    close_up: bool = False  # a characterisation view: the polyp large and near the centre


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise (about unit variance) with `cells` features across the image."""
    grid = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = Image.fromarray(grid, mode="F").resize(
        (size + 2 * size // cells, size + 2 * size // cells), Image.Resampling.BICUBIC
    )
    off = size // cells
    return np.asarray(big, dtype=np.float32)[off : off + size, off : off + size]


def _fractal(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        out += amp * _noise(rng, size, cells * 2**o)
        total += amp
        amp *= 0.5
    return out / total


def _mix(img: np.ndarray, color, alpha: np.ndarray) -> np.ndarray:
    """Blend `img` towards a colour with a per-pixel weight in [0, 1]."""
    a = np.clip(alpha, 0.0, 1.0, dtype=np.float32)[..., None]
    return img + (np.asarray(color, np.float32) - img) * a


def _lines(n: np.ndarray, width: float) -> np.ndarray:
    """Thin lines along the zero crossings of a noise field (a vessel-like network)."""
    return np.exp(-((n / width) ** 2))


def _polyp_geometry(rng, xx, yy, lumen, size, *, close_up):
    """Height field of a sessile or pedunculated dome, placed away from the lumen."""
    reach, min_gap, radii = (0.25, 0.35, (0.45, 0.7)) if close_up else (0.55, 0.45, (0.18, 0.38))
    for _ in range(20):
        cx, cy = rng.uniform(-reach, reach, 2)
        if np.hypot(cx - lumen[0], cy - lumen[1]) > min_gap:
            break
    a = rng.uniform(*radii)
    b = a * rng.uniform(0.7, 1.0)
    phi = rng.uniform(0, np.pi)
    c, s = np.cos(phi), np.sin(phi)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    wobble = 1.0 + 0.12 * _noise(rng, size, 4)
    d2 = ((u / a) ** 2 + (v / b) ** 2) * wobble
    flat = rng.uniform(0.5, 1.0)
    height = np.sqrt(np.clip(1.0 - d2, 0.0, None)) ** flat
    pedunculated = rng.random() < 0.3
    if pedunculated:
        # A stalk running from the head towards the wall (away from the lumen), lower than the head.
        dx, dy = cx - lumen[0], cy - lumen[1]
        norm = np.hypot(dx, dy) + 1e-6
        dx, dy = dx / norm, dy / norm
        length = a * rng.uniform(0.9, 1.6)
        t = np.clip((xx - cx) * dx + (yy - cy) * dy, 0.0, length)
        px, py = cx + t * dx, cy + t * dy
        perp = np.hypot(xx - px, yy - py) / (0.35 * a)
        stalk = 0.45 * np.sqrt(np.clip(1.0 - perp**2, 0.0, None))
        height = np.maximum(height, stalk)
    return height, d2, (u, v, a, b)


def _noise_at(rng, u: np.ndarray, v: np.ndarray, freq_u: float, freq_v: float) -> np.ndarray:
    """Value noise sampled at arbitrary (u, v): features follow the polyp's own axes."""
    grid = rng.standard_normal((64, 64)).astype(np.float32)
    coords = np.stack([u * freq_u + 32.0, v * freq_v + 32.0])
    return ndimage.map_coordinates(grid, coords, order=3, mode="grid-wrap")


def _ad_surface(rng, img, inside, uv, size, *, cue):
    """NICE 2: brown vessels around oval, tubular or branched white structures."""
    u, v, a, _ = uv
    pattern = rng.choice(["oval", "tubular", "branched"])
    freq = rng.uniform(6.0, 10.0) / a  # structures across the polyp
    if pattern == "tubular":  # elongated along the polyp's long axis
        n = _noise_at(rng, u, v, freq / 3.0, freq)
    elif pattern == "branched":  # ridges of |noise|: a branching network
        n = 1.2 * np.abs(_noise_at(rng, u, v, freq * 0.7, freq * 0.7)) - 0.2
    else:
        n = _noise_at(rng, u, v, freq, freq * rng.uniform(1.0, 1.6))
    threshold = 0.35
    white = np.clip((n - threshold) * 4.0, 0, 1) * inside
    vessels = _lines(n - threshold + 0.15, 0.12) * inside
    img = _mix(img, (0.93, 0.82, 0.76), 0.55 * cue["white"] * white)
    img = _mix(img, (0.36, 0.16, 0.10), 0.85 * cue["vessel"] * vessels)
    return img


def _non_ad_surface(rng, img, inside, uv, size, *, cue):
    """NICE 1: uniform dark or white spots; no or isolated lacy vessels."""
    u, v, a, _ = uv
    spacing = a / rng.uniform(5.0, 8.0)
    fx, fy = u / spacing, v / spacing
    ix, iy = np.floor(fx).astype(np.int32), np.floor(fy).astype(np.int32)
    jitter = rng.uniform(-0.12, 0.12, (2, 64, 64)).astype(np.float32)  # small jitter: uniform spots
    jx, jy = jitter[0][ix % 64, iy % 64], jitter[1][ix % 64, iy % 64]
    dist = np.hypot(fx - ix - 0.5 - jx, fy - iy - 0.5 - jy)
    spots = np.exp(-((dist / 0.2) ** 2)) * inside
    dark = rng.random() < 0.5
    spot_color = (0.42, 0.26, 0.26) if dark else (0.96, 0.88, 0.86)
    img = _mix(img, spot_color, 0.6 * cue["spots"] * spots)
    if rng.random() < 0.4:  # isolated lacy vessels
        lacy = _lines(_noise(rng, size, 10), 0.05) * (_noise(rng, size, 3) > 0.6) * inside
        img = _mix(img, (0.62, 0.22, 0.22), 0.5 * cue["vessel"] * lacy)
    return img


def _draw_cues(rng, pathology: str, ambiguous_share: float) -> tuple[dict, dict]:
    """Per-image cue strengths for the true class and (when ambiguous) borrowed other-class cues."""
    ambiguous = rng.random() < ambiguous_share
    strength = rng.uniform(0.0, 0.35) if ambiguous else rng.uniform(0.45, 1.0)
    own = {k: strength * rng.uniform(0.6, 1.0) for k in ("color", "white", "vessel", "spots")}
    other = {k: (rng.uniform(0.2, 0.6) if ambiguous else 0.0) * rng.uniform(0.5, 1.0) for k in own}
    return own, other


def render(seed: int, spec: PhantomSpec) -> np.ndarray:
    """Render one phantom image as uint8 HxWx3. The layers draw from one generator in a fixed
    order (wall, polyp, light, quality, camera): a seed always gives the same image."""
    rng = np.random.default_rng(seed)
    wall = _wall(rng, spec.size)
    img = wall.img
    height = np.zeros((spec.size, spec.size), np.float32)
    inside = np.zeros((spec.size, spec.size), np.float32)
    if spec.polyp:
        img, height, inside = _polyp(rng, img, spec, wall.lumen)
    img = _light(rng, img, wall, height, inside)
    img = _apply_quality(rng, img, spec.quality, spec.size)
    return _camera(rng, img)


@dataclass
class _Wall:
    img: np.ndarray  # HxWx3 mucosa colour with its vessels
    shading: np.ndarray  # low-frequency shading of the wall
    folds: np.ndarray  # fold pattern (ridges near 1)
    fold_light: np.ndarray  # light and shadow of the folds
    lumen: np.ndarray  # the lumen's centre (x, y) in [-1, 1]
    r: np.ndarray  # distance of each pixel from the lumen


def _wall(rng, size: int) -> _Wall:
    """Colon wall: mucosa colour, low-frequency shading, folds around a lumen, a fine vessel
    network (red, patchy)."""
    xx, yy = _grid(size)
    base = np.array([0.80, 0.42, 0.37], np.float32) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    lumen = rng.uniform(-0.6, 0.6, 2)
    r = np.hypot(xx - lumen[0], yy - lumen[1])
    theta = np.arctan2(yy - lumen[1], xx - lumen[0])
    img: np.ndarray = np.broadcast_to(base, (size, size, 3)).copy()
    img[..., 0] += 0.05 * _fractal(rng, size, 3)
    img[..., 1] += 0.04 * _fractal(rng, size, 3)
    shading = 1.0 + 0.12 * _fractal(rng, size, 2)

    fold_freq = rng.uniform(0.8, 1.4)
    fold_phase = rng.uniform(0, 2 * np.pi)
    angular = _noise(rng, size, 3)
    folds = np.sin(
        2 * np.pi * fold_freq * np.log(r + 0.05) + fold_phase + 1.5 * angular + 0.4 * np.sin(2 * theta)
    )
    fold_strength = rng.uniform(0.5, 1.0)
    fold_light = 1.0 + fold_strength * (0.12 * folds - 0.22 * np.exp(-(((folds + 0.9) / 0.08) ** 2)))

    vessel_mask = np.clip(_noise(rng, size, 4) + 0.3, 0.0, 1.0)
    vessels = _lines(_fractal(rng, size, 14, 2), 0.05) * vessel_mask
    img = _mix(img, (0.55, 0.14, 0.16), 0.35 * vessels)
    return _Wall(img, shading, folds, fold_light, lumen, r)


def _polyp(rng, img: np.ndarray, spec: PhantomSpec, lumen) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The polyp over the wall: its class's surface cues (some borrowed when ambiguous) and a
    contact shadow; returns the image, the polyp's height map and its mask."""
    size = spec.size
    xx, yy = _grid(size)
    height, d2, uv = _polyp_geometry(rng, xx, yy, lumen, size, close_up=spec.close_up)
    inside = np.clip((1.0 - d2) * 6.0, 0.0, 1.0)
    inside = np.maximum(inside, np.clip(height * 3.0, 0.0, 1.0))
    pathology = spec.pathology or rng.choice(PATHOLOGIES)
    own, other = _draw_cues(rng, pathology, spec.ambiguous_share)
    poly = img.copy()
    poly += 0.03 * _fractal(rng, size, 12, 2)[..., None]
    brown, light = (0.55, 0.30, 0.20), (0.92, 0.66, 0.62)
    if pathology == "AD":
        poly = _mix(poly, brown, 0.55 * own["color"] * inside)
        poly = _mix(poly, light, 0.45 * other["color"] * inside)
        poly = _ad_surface(rng, poly, inside, uv, size, cue=own)
        if other["spots"] > 0:
            poly = _non_ad_surface(rng, poly, inside, uv, size, cue=other)
    else:
        poly = _mix(poly, light, 0.45 * own["color"] * inside)
        poly = _mix(poly, brown, 0.55 * other["color"] * inside)
        poly = _non_ad_surface(rng, poly, inside, uv, size, cue=own)
        if other["white"] > 0:
            poly = _ad_surface(rng, poly, inside, uv, size, cue=other)
    img = poly * inside[..., None] + img * (1.0 - inside[..., None])
    # Contact shadow just outside the rim.
    rim = np.sqrt(np.clip(d2, 0.0, None))
    img *= (1.0 - 0.35 * np.exp(-(((rim - 1.0) / 0.12) ** 2)) * (rim > 1.0))[..., None]
    return img, height, inside


def _light(rng, img: np.ndarray, wall: _Wall, height: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Lambertian shading of the relief (light from beside the camera), specular highlights and
    glints on fold ridges, and the fall-off towards the dark lumen."""
    size = img.shape[0]
    relief = 0.6 * height * size / 2
    gy, gx = np.gradient(relief)
    sun = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), 1.0], np.float32)
    sun /= np.linalg.norm(sun)
    norm = np.sqrt(gx**2 + gy**2 + 1.0)
    ndotl = (-gx * sun[0] - gy * sun[1] + sun[2]) / norm
    shading = wall.shading.copy()  # in place below: it keeps the wall's dtype
    shading *= np.where(height > 0, 0.45 + 0.6 * np.clip(ndotl, 0, 1), 1.0)
    half = sun + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    ndoth = np.clip((-gx * half[0] - gy * half[1] + half[2]) / norm, 0, 1)
    specular = (ndoth ** rng.uniform(60, 200)) * (height > 0.05)
    glints = (wall.folds > 0.97) * (_noise(rng, size, 8) > 1.2)  # wet mucosa
    specular = np.maximum(specular, glints.astype(np.float32) * 0.9)

    depth = np.clip(wall.r / rng.uniform(0.9, 1.3), 0.0, 1.0) ** 0.7
    lumen_r = rng.uniform(0.12, 0.25)
    lumen_dark = np.exp(-((wall.r / lumen_r) ** 2))
    wall_light = (0.15 + 0.85 * depth) * (1.0 - 0.92 * lumen_dark)
    # The polyp is closer to the camera than the wall behind it: it keeps its own light.
    shading *= wall_light * wall.fold_light * (1.0 - inside) + 0.85 * inside
    img = img * shading[..., None]
    return _mix(img, (1.0, 1.0, 1.0), specular)


def _camera(rng, img: np.ndarray) -> np.ndarray:
    """Vignetting, a circular field stop and sensor noise; uint8."""
    size = img.shape[0]
    xx, yy = _grid(size)
    rc = np.hypot(xx, yy)
    img *= (1.0 - 0.35 * (rc / 1.41) ** 2.5)[..., None]
    img += rng.normal(0.0, 0.008, img.shape).astype(np.float32)
    stop = np.clip((1.32 - rc) * size / 4, 0.0, 1.0)
    img *= stop[..., None]
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _apply_quality(rng, img: np.ndarray, quality: str, size: int) -> np.ndarray:
    if quality == "sharp":
        return img
    if quality == "blurred":
        if rng.random() < 0.5:  # defocus
            sigma = rng.uniform(1.5, 3.0) * size / 256
            return ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0))
        length = max(3, int(rng.uniform(7, 15) * size / 256))  # motion along a random direction
        angle = rng.uniform(0, 180)
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0
        kernel = ndimage.rotate(kernel, angle, reshape=False, order=1)
        kernel /= kernel.sum()
        return np.stack([ndimage.convolve(img[..., ch], kernel, mode="nearest") for ch in range(3)], -1)
    if quality == "overexposed":
        gain = rng.uniform(1.7, 2.4)
        pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
        bloom = np.asarray(pil.filter(ImageFilter.GaussianBlur(size / 32)), np.float32) / 255.0
        return img * gain + 0.35 * bloom
    raise ValueError(f"unknown quality {quality!r}; expected one of {', '.join(QUALITIES)}")


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: lower means blurrier."""
    grey = np.asarray(image, np.float32).mean(axis=-1) if image.ndim == 3 else np.asarray(image, np.float32)
    return float(ndimage.laplace(grey).var())
