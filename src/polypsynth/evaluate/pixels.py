"""Copies searched in pixel space, however they are mirrored or cropped.

A memorised image comes back close to its training image pixel for pixel (Carlini et al. 2023
judged extraction by a distance between pixels, not features), but perhaps mirrored, or a crop of it
blown up to the full frame. So every image, after the generator's view, becomes a small thumbnail
(`SIDE`² RGB, standardised: zero mean, unit norm, so brightness and contrast do not count) and
the distance of two thumbnails is the Euclidean one, sqrt(2 - 2 * correlation), in [0, 2].

- each query image (synthetic, test) is looked at as stored and mirrored three ways (`FLIPS`);
- each training-pool image as stored and cropped to every side in `SCALES` (down to 80%) at every
  position of a 4 x 4 grid (`CROPS`, 49 views), each crop resized to the full thumbnail.

A crop copy between two grid points is within half a grid step of one, which a 16-pixel thumbnail
hardly sees: of 300 random crops (80-100% of the side, anywhere) of the demo's phantom images, every
one lies within 0.23 of its source, and no test image within 0.32 of any training image. The pools are streamed in chunks, so memory grows with the queries, not the pools."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from polypsynth.data.inspect import FLIPS
from polypsynth.evaluate.features import GeneratorView

SIDE = 16
SCALES = (0.8, 0.87, 0.94)
POSITIONS = (0.0, 1 / 3, 2 / 3, 1.0)  # of the margin left around the crop: 0 left/top, 1 right/bottom
CROPS = ((1.0, 0.5, 0.5), *((s, x, y) for s in SCALES for y in POSITIONS for x in POSITIONS))
CHUNK = 128  # pool images per step
# Leakage: a test image this close to a training image (or a crop, or mirrored) is the same
# picture: correlation >= 0.97 of the thumbnails (see the measurement above).
LEAK_DISTANCE = 0.25


def crop_name(index: int) -> str:
    scale, x, y = CROPS[index]
    if index == 0:
        return "whole image"
    return f"{scale:.0%} crop at {x:.0%} across, {y:.0%} down the margin"


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) -> (N, 3*S*S) float32, each row zero-mean and unit norm."""
    flat = x.reshape(len(x), -1).float()
    flat = flat - flat.mean(1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _thumb(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x.float(), size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)


def _flips(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) -> (N, len(FLIPS), 3, S, S) in FLIPS' order."""
    return torch.stack([x, x.flip(-1), x.flip(-2), x.flip(-1, -2)], 1)


def query_thumbnails(paths: Sequence, view: GeneratorView) -> np.ndarray:
    """(N, len(FLIPS), d): each image as stored and mirrored each way."""
    if not paths:
        return np.zeros((0, len(FLIPS), 3 * SIDE * SIDE), np.float32)
    thumbs = _thumb(torch.stack([view.pixels(p) for p in paths]))
    flipped = _flips(thumbs)
    return _standardise(flipped.reshape(-1, 3, SIDE, SIDE)).reshape(len(paths), len(FLIPS), -1).numpy()


def pool_thumbnails(paths: Sequence, view: GeneratorView) -> np.ndarray:
    """(N, len(CROPS), d): each image whole and cropped every way in CROPS."""
    if not paths:
        return np.zeros((0, len(CROPS), 3 * SIDE * SIDE), np.float32)
    images = torch.stack([view.pixels(p) for p in paths]).float()
    side = images.shape[-1]
    out = []
    for scale, x, y in CROPS:
        c = round(side * scale)
        left, top = round((side - c) * x), round((side - c) * y)
        out.append(_thumb(images[..., top : top + c, left : left + c]))
    stacked = torch.stack(out, 1)  # (N, crops, 3, S, S)
    return _standardise(stacked.reshape(-1, 3, SIDE, SIDE)).reshape(len(paths), len(CROPS), -1).numpy()


@dataclass
class Nearest:
    """Per query image: the distance to its nearest pool image (over flips and crops), which pool
    image (index), and the flip and crop (indices into FLIPS and CROPS) that came closest."""

    distance: np.ndarray
    image: np.ndarray
    flip: np.ndarray
    crop: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Nearest:
        return cls(np.full(n, np.inf), np.full(n, -1), np.zeros(n, int), np.zeros(n, int))

    def update(self, queries: np.ndarray, pool: np.ndarray, offset: int) -> None:
        """Fold in one chunk of pool thumbnails (M, crops, d) whose first image is `offset`."""
        m, crops, d = pool.shape
        flat = pool.reshape(m * crops, d).T
        for start in range(0, len(queries), CHUNK):  # (CHUNK * flips, CHUNK * crops) at a time
            q = queries[start : start + CHUNK]
            n, flips, _ = q.shape
            sim = (q.reshape(n * flips, d) @ flat).reshape(n, flips * m * crops)
            best = sim.argmax(1)
            dist = np.sqrt(np.clip(2 - 2 * sim[np.arange(n), best], 0, None))
            rows = np.arange(start, start + n)[dist < self.distance[start : start + n]]
            better = rows - start
            flip, rest = np.divmod(best[better], m * crops)
            image, crop = np.divmod(rest, crops)
            self.distance[rows] = dist[better]
            self.image[rows] = image + offset
            self.flip[rows] = flip
            self.crop[rows] = crop


def search(
    queries: Mapping[str, np.ndarray],
    pools: Mapping[str, Sequence],
    view: GeneratorView,
    progress: bool = False,
) -> dict[str, dict[str, Nearest]]:
    """query set -> pool -> Nearest: every query set searched in every pool, each pool image's
    thumbnails computed once (in chunks of CHUNK images)."""
    found: dict[str, dict[str, Nearest]] = {q: {} for q in queries}
    for pool, paths in pools.items():
        paths = list(paths)
        for name, q in queries.items():
            found[name][pool] = Nearest.empty(len(q))
        chunks = range(0, len(paths), CHUNK)
        for start in tqdm(chunks, desc=f"copy search: {pool}", unit="chunk", disable=not progress):
            thumbs = pool_thumbnails(paths[start : start + CHUNK], view)
            for name, q in queries.items():
                if len(q):
                    found[name][pool].update(q, thumbs, start)
    return found
