"""Checks of a data set before it is trusted: counts, resolutions, unreadable files, leakage."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from polypsynth.data.dataset import open_rgb
from polypsynth.data.records import Record
from polypsynth.errors import DataError


@dataclass
class InspectReport:
    counts: Counter = field(default_factory=Counter)  # (label, split, quality) -> n
    resolutions: Counter = field(default_factory=Counter)  # (width, height) -> n
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    duplicates: list[list[str]] = field(default_factory=list)  # groups of identical images
    leaks: list[list[str]] = field(default_factory=list)  # identical images in train and test

    def format(self) -> str:
        lines = ["label      split  quality      count"]
        for (label, split, quality), n in sorted(self.counts.items()):
            lines.append(f"{label:<10} {split:<6} {quality:<12} {n}")
        lines.append(
            "resolutions: " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.resolutions.most_common())
        )
        lines.append(f"unreadable files: {len(self.unreadable)}")
        lines += [f"  {p}: {why}" for p, why in self.unreadable]
        lines.append(f"duplicate groups: {len(self.duplicates)}")
        lines.append(f"duplicates across train and test: {len(self.leaks)}")
        lines += ["  " + " == ".join(group) for group in self.leaks]
        return "\n".join(lines)


def content_hash(image) -> str:
    """Hash of the decoded pixels: catches the same image saved twice in different files or formats."""
    arr = np.asarray(image)
    return hashlib.sha256(f"{arr.shape}".encode() + arr.tobytes()).hexdigest()


def inspect_records(records: Sequence[Record], progress: bool = True) -> InspectReport:
    report = InspectReport()
    by_hash: dict[str, list[Record]] = defaultdict(list)
    for record in tqdm(records, desc="inspect", unit="img", disable=not progress):
        try:
            image = open_rgb(record.path)
        except DataError as exc:
            report.unreadable.append((str(record.path), str(exc.__cause__ or exc)))
            continue
        report.counts[(record.label, record.split, record.quality)] += 1
        report.resolutions[image.size] += 1
        by_hash[content_hash(image)].append(record)
    for group in by_hash.values():
        if len(group) > 1:
            report.duplicates.append([str(r.path) for r in group])
            if len({r.split for r in group}) > 1:
                report.leaks.append([f"{r.path} ({r.split})" for r in group])
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
