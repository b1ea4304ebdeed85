"""The image sets an evaluation compares: real AD / NON_AD (train and test splits, and a held-out
control carved from the train split) and, per checkpoint, synthetic AD / NON_AD from
`SYNTHETIC/<checkpoint>/<class>/*.png`; and the one resolution they are all compared at."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from polypsynth.atomic import incomplete_text, lock_holder, read_incomplete
from polypsynth.data.records import CLASSES, Record, list_images
from polypsynth.errors import EvalError

CONTROL = "held-out real"  # the positive control's name in every table
MIN_CONTROL = 10  # images per class: as for a KID (kid.MIN_IMAGES)


@dataclass
class RealData:
    train: dict[str, list[Path]]  # class -> images
    test: dict[str, list[Path]]
    control: dict[str, list[Path]] = field(default_factory=dict)  # held out of train (hold_out_control)


@dataclass
class Checkpoint:
    name: str  # folder name, e.g. step-000400
    step: int | None  # the number in the name, for curves
    images: dict[str, list[Path]] = field(default_factory=dict)  # class -> images
    control: bool = False  # real images standing in for a perfect generator


def hold_out_control(real: RealData, checkpoints: list[Checkpoint], share: float, seed: int) -> RealData:
    """The positive control: per class, as many real training images as the smallest checkpoint has
    (at most `share` of that class's training images), drawn at random and removed from the train
    split, so they are new to every reference set and judged like a checkpoint's samples. `share`
    in (0, 1) is checked by EvalOptions.validate."""
    rng = np.random.default_rng(seed)
    train, control = {}, {}
    for c in CLASSES:
        smallest = min(checkpoints, key=lambda ck: len(ck.images[c]))
        n = min(len(smallest.images[c]), int(share * len(real.train[c])))
        if len(smallest.images[c]) < MIN_CONTROL:
            raise EvalError(
                f"checkpoint {smallest.name} has {len(smallest.images[c])} {c} images; the positive control is "
                f"matched to it and needs at least {MIN_CONTROL} per class (sample more images)"
            )
        if n < MIN_CONTROL:
            raise EvalError(
                f"the real train split has {len(real.train[c])} {c} images: a share of {share} holds out {n}, "
                f"fewer than the {MIN_CONTROL} the positive control needs (raise --control-share or add images)"
            )
        held = set(rng.choice(len(real.train[c]), n, replace=False).tolist())
        control[c] = [p for i, p in enumerate(real.train[c]) if i in held]
        train[c] = [p for i, p in enumerate(real.train[c]) if i not in held]
    return replace(real, train=train, control=control)


def control_checkpoint(real: RealData) -> Checkpoint:
    return Checkpoint(CONTROL, None, dict(real.control), control=True)


def generator_resolution(sets: list[dict[str, list[Path]]], recorded: int | None = None) -> int:
    """The one square resolution of the generator's images (every image of `sets`, headers only);
    `recorded`: the resolution known from the checkpoint or bundle, which they must have."""
    sizes: Counter = Counter()
    example: dict = {}
    for images in sets:
        for paths in images.values():
            for p in paths:
                try:
                    with Image.open(p) as im:
                        size = im.size
                except (UnidentifiedImageError, OSError) as exc:
                    raise EvalError(f"cannot decode image {p}: {exc}") from exc
                sizes[size] += 1
                example.setdefault(size, p)
    if len(sizes) > 1 or (sizes and next(iter(sizes))[0] != next(iter(sizes))[1]):
        listed = ", ".join(
            f"{w}x{h} ({n} images, e.g. {example[(w, h)]})" for (w, h), n in sizes.most_common()
        )
        raise EvalError(
            f"synthetic images have mixed or non-square sizes: {listed}; one generator resolution is expected"
        )
    found = next(iter(sizes))[0] if sizes else None
    if recorded is not None and found is not None and found != recorded:
        raise EvalError(
            f"synthetic images are {found}x{found}, but the generator's recorded resolution is {recorded}"
        )
    resolution = recorded if recorded is not None else found
    if resolution is None:
        raise EvalError("no synthetic images to take the generator's resolution from")
    return int(resolution)


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
            unfinished = read_incomplete(folder / c)
            if unfinished is not None:
                raise EvalError(f"synthetic class folder {incomplete_text(folder / c, unfinished)}")
            writer = lock_holder(folder / c)
            if writer is not None:
                raise EvalError(
                    f"synthetic class folder {folder / c} is being written by another polypsynth process ({writer})"
                )
            images = list_images(folder / c)
            if not images:
                raise EvalError(f"synthetic class folder {folder / c} holds no images")
            ckpt.images[c] = images
        checkpoints.append(ckpt)
    return sorted(checkpoints, key=lambda c: (c.step is None, c.step or 0, c.name))
