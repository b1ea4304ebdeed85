"""The built-in phantom data set: every set the study needs, deterministic for a seed.

Layout written by `generate_phantom(out, ...)`:

    OUT/manifest.csv                       path,label,split,quality,source,seed
    OUT/stage1/{polyp,non_polyp}/*.png     study stage 1 frames, quality sharp/blurred/overexposed
    OUT/classif/{train,test}/{AD,NON_AD}/*.png   close-up pathology images (AD:NON_AD about 2:1)
    OUT/unlabelled/polyp/*.png             high-quality close-ups without pathology labels

Each image has its own seed (derived from the run seed, the set and the index) recorded in the
manifest, so any single image can be re-rendered with `render(seed, spec)`.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from polypsynth.atomic import atomic_dir
from polypsynth.data.phantom_render import QUALITIES, PhantomSpec, render
from polypsynth.data.records import MANIFEST_COLUMNS, Record
from polypsynth.errors import DataError

SUBSETS = ("stage1", "classif", "unlabelled")


@dataclass(frozen=True)
class PhantomPlan:
    """How many images of each kind to draw."""

    size: int = 256
    stage1: int = 600
    stage1_polyp_share: float = 0.5
    quality_shares: tuple[float, float, float] = (0.6, 0.25, 0.15)  # sharp, blurred, overexposed
    train: int = 240
    test: int = 120
    ad_share: float = 2 / 3
    unlabelled: int = 120
    ambiguous_share: float = 0.25

    def validate(self) -> PhantomPlan:
        if self.size < 32 or self.size % 8:
            raise DataError(f"phantom size must be a multiple of 8 and at least 32, got {self.size}")
        for name in ("stage1", "train", "test", "unlabelled"):
            if getattr(self, name) < 0:
                raise DataError(f"phantom {name} count must be >= 0, got {getattr(self, name)}")
        for name in ("stage1_polyp_share", "ad_share", "ambiguous_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataError(f"phantom {name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.quality_shares) != 3 or min(self.quality_shares) < 0 or sum(self.quality_shares) <= 0:
            raise DataError(
                f"phantom quality_shares must be three non-negative shares, got {self.quality_shares}"
            )
        if self.train + self.test + self.stage1 + self.unlabelled == 0:
            raise DataError("phantom plan draws no image: every count is 0")
        return self


@dataclass(frozen=True)
class _Job:
    relpath: str
    spec: PhantomSpec
    seed: int
    label: str
    split: str
    quality: str
    source: str


def image_seed(seed: int, subset: str, index: int) -> int:
    """The seed of one image, independent of every other image's."""
    state = np.random.SeedSequence(entropy=seed, spawn_key=(SUBSETS.index(subset), index)).generate_state(2)
    return int(state[0]) << 31 ^ int(state[1])


def _exact_counts(n: int, shares, rng: np.random.Generator) -> list[int]:
    """Assign n items to categories in exact proportion, in a seeded random order."""
    shares = np.asarray(shares, float) / np.sum(shares)
    counts = np.floor(shares * n).astype(int)
    counts[np.argsort(-(shares * n - counts))[: n - counts.sum()]] += 1
    order = np.repeat(np.arange(len(shares)), counts)
    rng.shuffle(order)
    return order.tolist()


def plan_jobs(plan: PhantomPlan, seed: int) -> list[_Job]:
    plan.validate()
    rng = np.random.default_rng(seed)
    base = PhantomSpec(size=plan.size, ambiguous_share=plan.ambiguous_share)
    jobs: list[_Job] = []

    n_polyp = round(plan.stage1 * plan.stage1_polyp_share)
    qualities = _exact_counts(plan.stage1, plan.quality_shares, rng)
    for i in range(plan.stage1):
        polyp = i < n_polyp
        label = "polyp" if polyp else "non_polyp"
        quality = QUALITIES[qualities[i]]
        spec = replace(base, polyp=polyp, quality=quality)
        jobs.append(
            _Job(
                f"stage1/{label}/s1-{i:06d}.png",
                spec,
                image_seed(seed, "stage1", i),
                label,
                "train",
                quality,
                "phantom/stage1",
            )
        )

    index = 0
    for split, count in (("train", plan.train), ("test", plan.test)):
        n_ad = round(count * plan.ad_share)
        for j in range(count):
            label = "AD" if j < n_ad else "NON_AD"
            spec = replace(base, pathology=label, close_up=True)
            jobs.append(
                _Job(
                    f"classif/{split}/{label}/{split}-{j:06d}.png",
                    spec,
                    image_seed(seed, "classif", index),
                    label,
                    split,
                    "sharp",
                    "phantom/classif",
                )
            )
            index += 1

    for i in range(plan.unlabelled):
        spec = replace(base, close_up=True)  # pathology drawn at random, not recorded
        jobs.append(
            _Job(
                f"unlabelled/polyp/u-{i:06d}.png",
                spec,
                image_seed(seed, "unlabelled", i),
                "polyp",
                "train",
                "sharp",
                "phantom/unlabelled",
            )
        )
    return jobs


def _render_job(args: tuple[_Job, str]) -> str:
    job, root = args
    pixels = render(job.seed, job.spec)
    path = os.path.join(root, job.relpath)
    Image.fromarray(pixels).save(path, compress_level=3)
    return job.relpath


def generate_phantom(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    plan: PhantomPlan | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> list[Record]:
    """Render the phantom data set into `out` (atomically) and return its records."""
    plan = (plan or PhantomPlan()).validate()
    jobs = plan_jobs(plan, seed)
    workers = max(1, min(workers or os.cpu_count() or 1, 8))
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite, what="phantom output folder") as tmp:
        for folder in {os.path.dirname(j.relpath) for j in jobs}:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(jobs), desc="phantom", unit="img", disable=not progress)
        work = [(job, str(tmp)) for job in jobs]
        if workers == 1 or len(jobs) < 64:
            for item in work:
                _render_job(item)
                bar.update()
        else:
            # spawn: the parent may hold torch threads, which fork does not copy safely.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for _ in pool.map(_render_job, work, chunksize=16):
                    bar.update()
        bar.close()
        with open(tmp / "manifest.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(MANIFEST_COLUMNS)
            for job in jobs:
                writer.writerow([job.relpath, job.label, job.split, job.quality, job.source, job.seed])
    return [Record(out / j.relpath, j.label, j.split, j.quality, j.source, j.seed) for j in jobs]
