"""The image sets an evaluation compares: real AD / NON_AD (train and test splits) and, per
checkpoint, synthetic AD / NON_AD from `SYNTHETIC/<checkpoint>/<class>/*.png`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from polypsynth.data.records import CLASSES, Record, list_images
from polypsynth.errors import EvalError


@dataclass
class RealData:
    train: dict[str, list[Path]]  # class -> images
    test: dict[str, list[Path]]


@dataclass
class Checkpoint:
    name: str  # folder name, e.g. step-000400
    step: int | None  # the number in the name, for curves
    images: dict[str, list[Path]] = field(default_factory=dict)  # class -> images


def real_data(records: list[Record]) -> RealData:
    sets = {
        split: {c: sorted(r.path for r in records if r.label == c and r.split == split) for c in CLASSES}
        for split in ("train", "test")
    }
    for split in ("train", "test"):
        for c in CLASSES:
            if not sets[split][c]:
                labels = sorted({r.label for r in records})
                raise EvalError(
                    f"real data has no {c} images in its {split} split (labels found: {', '.join(labels)})"
                )
    return RealData(sets["train"], sets["test"])


def reconstruction_set(root: str | Path) -> dict[str, list[Path]]:
    """`ROOT/<class>/*.png` as written by `polypsynth reconstruct`."""
    root = Path(root)
    sets = {}
    for c in CLASSES:
        images = list_images(root / c) if (root / c).is_dir() else []
        if not images:
            raise EvalError(f"reconstruction folder {root} has no {c} images (expected {root}/{c}/*.png)")
        sets[c] = images
    return sets


def _step_of(name: str) -> int | None:
    found = re.findall(r"\d+", name)
    return int(found[-1]) if found else None


def synthetic_checkpoints(root: str | Path) -> list[Checkpoint]:
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"synthetic folder not found: {root} (expected {root}/<checkpoint>/<class>/*.png)")
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not folders:
        raise EvalError(
            f"synthetic folder {root} has no checkpoint folders (expected {root}/step-001000/AD/ ...)"
        )
    checkpoints = []
    for folder in folders:
        found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if sorted(found) != sorted(CLASSES):
            raise EvalError(
                f"synthetic set {folder} has class folders {found or 'none'}; the real data's classes are "
                f"{', '.join(CLASSES)}"
            )
        ckpt = Checkpoint(folder.name, _step_of(folder.name))
        for c in CLASSES:
            images = list_images(folder / c)
            if not images:
                raise EvalError(f"synthetic class folder {folder / c} holds no images")
            ckpt.images[c] = images
        checkpoints.append(ckpt)
    return sorted(checkpoints, key=lambda c: (c.step is None, c.step or 0, c.name))
