"""The image sets an evaluation compares: real AD / NON_AD (train and test splits, the train split
cut into folds for the positive control) and, per checkpoint, synthetic AD / NON_AD from
`SYNTHETIC/<checkpoint>/<class>/*.png`; and the one resolution they are all compared at.

The positive control is cross-fitted: the real train split is cut into K folds (stratified by
class; by lesion when the data names one, so the frames of one polyp stay in one fold), and each
fold's images are judged like a checkpoint's samples against the rest, the classifier that judges
or is augmented by them trained on the rest. Every checkpoint is compared with the whole train
split, and Table 1's real row trains on all of it, as in the study: no real image is taken away."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from polypsynth.atomic import incomplete_text, lock_holder, read_incomplete
from polypsynth.data.records import CLASSES, Record, list_images
from polypsynth.errors import EvalError

CONTROL = "held-out real"  # the positive control's name in every table
MIN_CONTROL = 10  # images per class in a fold and in the rest: as for a KID (kid.MIN_IMAGES)
FOLDS = 2  # a fold adds half of the real images to the other half: as many as synthetic_share 0.5 adds


@dataclass
class RealData:
    train: dict[str, list[Path]]  # class -> images
    test: dict[str, list[Path]]
    folds: list[dict[str, np.ndarray]] = field(default_factory=list)  # per fold, class -> train indices

    def fold(self, f: int) -> dict[str, list[Path]]:
        """The images fold f holds out."""
        return {c: [self.train[c][i] for i in self.folds[f][c]] for c in CLASSES}

    def rest(self, f: int) -> dict[str, list[Path]]:
        """The train split without fold f."""
        held = {c: set(self.folds[f][c].tolist()) for c in CLASSES}
        return {c: [p for i, p in enumerate(self.train[c]) if i not in held[c]] for c in CLASSES}


@dataclass
class Checkpoint:
    name: str  # folder name, e.g. step-000400
    step: int | None  # the number in the name, for curves
    images: dict[str, list[Path]] = field(default_factory=dict)  # class -> images
    control: bool = False  # real images standing in for a perfect generator


def control_folds(
    real: RealData, folds: int = FOLDS, seed: int = 0, group_of: Callable[[Path], str] | None = None
) -> RealData:
    """The train split cut into `folds` folds for the cross-fitted positive control: stratified by
    class, and by lesion when `group_of` names each image's (scikit-learn's StratifiedGroupKFold,
    shuffled with `seed`); every fold and every rest holds at least MIN_CONTROL images per class."""
    from sklearn.model_selection import StratifiedGroupKFold

    paths = [p for c in CLASSES for p in real.train[c]]
    labels = np.array([i for i, c in enumerate(CLASSES) for _ in real.train[c]])
    groups = [group_of(p) for p in paths] if group_of else [str(p) for p in paths]
    if len(set(groups)) < folds:
        raise EvalError(
            f"the real train split has {len(set(groups))} lesion group(s); {folds} control folds need as many"
        )
    offsets = {c: sum(len(real.train[d]) for d in CLASSES[: CLASSES.index(c)]) for c in CLASSES}
    cut = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    for _, held in cut.split(np.zeros(len(paths)), labels, groups):
        out.append({c: np.sort(held[labels[held] == i] - offsets[c]) for i, c in enumerate(CLASSES)})
    for f, fold in enumerate(out):
        for c in CLASSES:
            n, rest = len(fold[c]), len(real.train[c]) - len(fold[c])
            if min(n, rest) < MIN_CONTROL:
                raise EvalError(
                    f"the real train split has {len(real.train[c])} {c} images: control fold {f + 1} of {folds} holds out "
                    f"{n} and leaves {rest}; the positive control needs at least {MIN_CONTROL} in each "
                    "(fewer --control-folds, or more images)"
                )
    return replace(real, folds=out)


def control_checkpoint(real: RealData) -> Checkpoint:
    """The positive control as a judged set: every train image, each judged in its fold."""
    return Checkpoint(CONTROL, None, {c: list(real.train[c]) for c in CLASSES}, control=True)


def lesion_groups(spec: str, source: str | Path | None = None) -> Callable[[Path], str]:
    """`--group-by`: which lesion an image shows. 'column:NAME' reads column NAME of the CSV
    manifest `source`; 'pattern:REGEX' takes REGEX's first group (or its whole match) from the file
    name. Returns a function of an image path that raises EvalError, naming the image, where it
    finds no lesion."""
    kind, value = check_group_by(spec)
    if kind == "pattern":
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise EvalError(f"--group-by pattern {value!r} is not a regular expression: {exc}") from exc

        def by_name(path: Path) -> str:
            found = pattern.search(Path(path).name)
            if not found:
                raise EvalError(
                    f"--group-by pattern {value!r} finds no lesion in the file name {Path(path).name}"
                )
            return found.group(1) if pattern.groups else found.group(0)

        return by_name
    return _column_groups(value, source)


def check_group_by(spec: str) -> tuple[str, str]:
    """('column' or 'pattern', its value) of a --group-by value, or an EvalError."""
    kind, _, value = spec.partition(":")
    if kind not in ("column", "pattern") or not value:
        raise EvalError(
            f"--group-by must be 'column:NAME' (a column of the CSV manifest) or 'pattern:REGEX', got {spec!r}"
        )
    return kind, value


def _column_groups(column: str, source: str | Path | None) -> Callable[[Path], str]:
    import csv

    if source is None or not Path(source).is_file() or Path(source).suffix.lower() != ".csv":
        raise EvalError(f"--group-by column:{column} needs --real to be a CSV manifest, got {source}")
    with open(source, newline="") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise EvalError(
                f"--group-by column:{column}: {source} has no column {column!r} (columns: {', '.join(reader.fieldnames or [])})"
            )
        lesions = {(Path(source).parent / row["path"]).resolve(): row[column].strip() for row in reader}

    def by_column(path: Path) -> str:
        lesion = lesions.get(Path(path).resolve())
        if not lesion:
            raise EvalError(f"--group-by column:{column}: no lesion for {path} in {source}")
        return lesion

    return by_column


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
