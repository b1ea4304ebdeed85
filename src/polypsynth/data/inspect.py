"""Checks of a data set before it is trusted: counts, resolutions, unreadable files, leakage.

Leakage is looked for twice: identical pixels in two splits, and near-duplicates (the same frame
re-encoded, resized or slightly shifted, or mirrored; neighbouring video frames) between the test
split and every other image, found by the Hamming distance of 64-bit perceptual hashes
(imagehash.phash). A flip moves a pHash 22-32 bits, so each query image is also hashed mirrored
horizontally, vertically and both ways (`FLIPS`); the pools are hashed once, as stored."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from polypsynth.data.images import SIXTEEN_BIT, decode, open_rgb
from polypsynth.data.records import Record
from polypsynth.errors import DataError


@dataclass
class InspectReport:
    counts: Counter = field(default_factory=Counter)  # (label, split, quality) -> n
    resolutions: Counter = field(default_factory=Counter)  # (width, height) -> n
    modes: Counter = field(default_factory=Counter)  # the files' own image modes (RGB, P, I;16, ...) -> n
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    duplicates: list[list[str]] = field(default_factory=list)  # groups of identical images
    leaks: list[list[str]] = field(default_factory=list)  # identical images in train and test
    near_leaks: list[tuple[str, str, int]] = field(default_factory=list)  # (test, other, distance)
    max_distance: int = 0

    def format(self) -> str:
        lines = ["label      split  quality      count"]
        for (label, split, quality), n in sorted(self.counts.items()):
            lines.append(f"{label:<10} {split:<6} {quality:<12} {n}")
        lines.append(
            "resolutions: " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.resolutions.most_common())
        )
        lines.append(
            "image modes: "
            + ", ".join(
                f"{mode} ({n}{', 16-bit: scaled to 8 bits' if mode in SIXTEEN_BIT else ''})"
                for mode, n in self.modes.most_common()
            )
        )
        lines.append(f"unreadable files: {len(self.unreadable)}")
        lines += [f"  {p}: {why}" for p, why in self.unreadable]
        lines.append(f"duplicate groups: {len(self.duplicates)}")
        lines.append(f"duplicates across train and test: {len(self.leaks)}")
        lines += ["  " + " == ".join(group) for group in self.leaks]
        lines.append(
            f"near-duplicates of test images elsewhere (perceptual hash distance <= {self.max_distance}): "
            f"{len(self.near_leaks)}"
        )
        lines += [f"  {t} ~ {o} (distance {d})" for t, o, d in self.near_leaks]
        return "\n".join(lines)


def content_hash(image) -> str:
    """Hash of the decoded pixels: catches the same image saved twice in different files or formats."""
    arr = np.asarray(image)
    return hashlib.sha256(f"{arr.shape}".encode() + arr.tobytes()).hexdigest()


MAX_HASH_DISTANCE = 4  # of 64 bits; distinct phantom images lie 8 or more apart


def perceptual_hash(image) -> int:
    import imagehash

    return int(str(imagehash.phash(image)), 16)


FLIPS = ("as stored", "mirrored left-right", "mirrored top-bottom", "rotated 180")


def _flipped(image) -> list:
    from PIL import Image

    return [
        image,
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        image.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        image.transpose(Image.Transpose.ROTATE_180),
    ]


def hash_paths(paths: Sequence, progress: bool = False, desc: str = "hash") -> np.ndarray:
    return np.array(
        [perceptual_hash(open_rgb(p)) for p in tqdm(paths, desc=desc, unit="img", disable=not progress)],
        dtype=np.uint64,
    )


def hash_flips(paths: Sequence, progress: bool = False, desc: str = "hash") -> np.ndarray:
    """(N, len(FLIPS)) hashes: each image as stored and mirrored each way."""
    rows = [
        [perceptual_hash(v) for v in _flipped(open_rgb(p))]
        for p in tqdm(paths, desc=desc, unit="img", disable=not progress)
    ]
    return np.array(rows, dtype=np.uint64).reshape(len(rows), len(FLIPS))


def matches(
    query_flips: np.ndarray, reference: np.ndarray, max_distance: int = MAX_HASH_DISTANCE
) -> list[tuple[int, int, int, int]]:
    """(query index, reference index, distance, flip index) of every query within `max_distance`
    of a reference hash in any of its flips, the closest flip per pair."""
    best: dict[tuple[int, int], tuple[int, int]] = {}
    flat = query_flips.reshape(-1)
    for i, j, d in near_duplicates(flat, reference, max_distance):
        key = (i // len(FLIPS), j)
        if key not in best or d < best[key][0]:
            best[key] = (d, i % len(FLIPS))
    return [(q, r, d, f) for (q, r), (d, f) in sorted(best.items())]


def near_duplicates(
    query: np.ndarray, reference: np.ndarray, max_distance: int = MAX_HASH_DISTANCE
) -> list[tuple[int, int, int]]:
    """(query index, reference index, Hamming distance) of every pair within `max_distance`."""
    found = []
    for start in range(0, len(query), 256):
        d = np.bitwise_count(query[start : start + 256, None] ^ reference[None]).astype(int)
        for i, j in zip(*np.nonzero(d <= max_distance), strict=True):
            found.append((start + int(i), int(j), int(d[i, j])))
    return found


def leakage(
    test: Sequence,
    pools: Mapping[str, Sequence],
    *,
    max_distance: int = MAX_HASH_DISTANCE,
    progress: bool = False,
    test_hashes: np.ndarray | None = None,
    pool_hashes: Mapping[str, np.ndarray] | None = None,
) -> list[dict]:
    """Near-duplicates of test images (as stored or mirrored) in any training pool: one entry per
    pair, with its pool and the flip that matched. Hashes already computed may be passed."""
    test = list(test)
    test_h = hash_flips(test, progress, "hash test") if test_hashes is None else test_hashes
    found = []
    for pool, paths in pools.items():
        paths = list(paths)
        if not paths:
            continue
        ref = pool_hashes[pool] if pool_hashes is not None else hash_paths(paths, progress, f"hash {pool}")
        for i, j, d, f in matches(test_h, ref, max_distance):
            found.append(
                {"test": str(test[i]), "pool": pool, "image": str(paths[j]), "distance": d, "flip": FLIPS[f]}
            )
    return found


def inspect_records(
    records: Sequence[Record], progress: bool = True, max_distance: int = MAX_HASH_DISTANCE
) -> InspectReport:
    report = InspectReport(max_distance=max_distance)
    by_hash: dict[str, list[Record]] = defaultdict(list)
    hashed: list[tuple[Record, list[int]]] = []
    for record in tqdm(records, desc="inspect", unit="img", disable=not progress):
        try:
            decoded = decode(record.path)
        except DataError as exc:
            report.unreadable.append((str(record.path), str(exc.__cause__ or exc)))
            continue
        image = decoded.image
        report.modes[decoded.mode] += 1
        report.counts[(record.label, record.split, record.quality)] += 1
        report.resolutions[image.size] += 1
        by_hash[content_hash(image)].append(record)
        flips = (
            [perceptual_hash(v) for v in _flipped(image)]
            if record.split == "test"
            else [perceptual_hash(image)]
        )
        hashed.append((record, flips))
    for group in by_hash.values():
        if len(group) > 1:
            report.duplicates.append([str(r.path) for r in group])
            if len({r.split for r in group}) > 1:
                report.leaks.append([f"{r.path} ({r.split})" for r in group])
    test = [(r, h) for r, h in hashed if r.split == "test"]
    other = [(r, h[0]) for r, h in hashed if r.split != "test"]
    if test and other:
        pairs = matches(
            np.array([h for _, h in test], np.uint64),
            np.array([h for _, h in other], np.uint64),
            max_distance,
        )
        report.near_leaks = [(str(test[i][0].path), str(other[j][0].path), d) for i, j, d, _ in pairs]
    return report


def verify_images(records: Sequence[Record], skip_bad: bool = False) -> tuple[list[Record], list[str]]:
    """Decode every image; raise on the first bad one, or drop the bad ones and list them."""
    good, bad = [], []
    for record in records:
        try:
            open_rgb(record.path)
            good.append(record)
        except DataError:
            if not skip_bad:
                raise
            bad.append(str(record.path))
    return good, bad
