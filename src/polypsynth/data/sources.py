"""Dataset loaders. Each returns a list of `Record` (image path, label, split, quality, source).

Loaders read folder layouts and label files only; images are decoded later (by the Dataset, or
by `verify_images` / `polypsynth data inspect`), so listing 150k SUN frames stays fast.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

from polypsynth.data.records import (
    IMAGE_EXTENSIONS,
    MANIFEST_COLUMNS,
    LabelMap,
    Record,
    filter_records,
    is_image,
    list_images,
)
from polypsynth.errors import DataError

_SPLIT_NAMES = {"train": "train", "training": "train", "test": "test", "val": "test", "valid": "test"}
_SPLIT_NAMES["validation"] = "test"  # CVC-ClinicHDclassif: the official validation set is the test set


def _split_of(name: str) -> str | None:
    return _SPLIT_NAMES.get(name.strip().lower())


def _require_dir(root: Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} folder not found: {root}")
    return root


def _class_folder_records(folder: Path, split: str, label_map: LabelMap, source: str) -> list[Record]:
    records = []
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"image folder {folder} has no class sub-folders (expected e.g. {folder}/AD, {folder}/NON_AD)"
        )
    for class_dir in class_dirs:
        label = label_map(class_dir.name, where=f"folder name {class_dir}")
        images = list_images(class_dir, recursive=True)
        if not images:
            raise DataError(f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        records += [Record(p, label, split, "unknown", source) for p in images]
    return records


def load_image_folder(
    root: str | Path, label_map: LabelMap | None = None, source: str = "image_folder"
) -> list[Record]:
    """`ROOT/<class>/*.png`, or `ROOT/<split>/<class>/*.png` with split train/test/val/validation."""
    root = _require_dir(Path(root), "image")
    label_map = label_map or LabelMap()
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    splits = {p: split for p in subdirs if (split := _split_of(p.name))}
    if splits and len(splits) == len(subdirs):
        records = []
        for d in sorted(splits):
            records += _class_folder_records(d, splits[d], label_map, source)
        return records
    return _class_folder_records(root, "train", label_map, source)


def load_csv_manifest(
    path: str | Path, label_map: LabelMap | None = None, source: str | None = None
) -> list[Record]:
    """A CSV with columns path, label, split (quality, source, seed optional); paths relative to the CSV."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV manifest not found: {path}")
    label_map = label_map or LabelMap()
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        missing = [c for c in ("path", "label", "split") if c not in columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(columns) or 'none'} "
                f"(expected {', '.join(MANIFEST_COLUMNS[:3])} and optionally {', '.join(MANIFEST_COLUMNS[3:])})"
            )
        records = []
        for line, row in enumerate(reader, start=2):
            split = _split_of(row["split"] or "")
            if split is None:
                raise DataError(
                    f"{path}:{line}: split {row['split']!r} is not train, test, val or validation"
                )
            seed = row.get("seed")
            records.append(
                Record(
                    (path.parent / row["path"]).resolve(),
                    label_map(row["label"], where=f"{path}:{line}"),
                    split,
                    row.get("quality") or "unknown",
                    row.get("source") or source or "csv",
                    int(seed) if seed else None,
                )
            )
    if not records:
        raise DataError(f"{path}: the manifest lists no images")
    return records


def load_phantom(root: str | Path, subset: str) -> list[Record]:
    """A folder written by `polypsynth data phantom`; subset is stage1, classif or unlabelled."""
    root = _require_dir(Path(root), "phantom")
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{root} is not a phantom data set: {manifest} is missing")
    records = [r for r in load_csv_manifest(manifest) if r.source == f"phantom/{subset}"]
    if not records:
        raise DataError(f"phantom data set {root} holds no images of subset {subset!r}")
    return records


# --- SUN Colonoscopy Video Database ---------------------------------------------------------------


def _frames(case_dir: Path, frame_step: int) -> list[Path]:
    return list_images(case_dir)[::frame_step]


def _sun_cases(folder: Path) -> list[Path]:
    """Case folders of frames under `folder` (or the folder itself when it holds frames directly)."""
    cases = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return cases if cases else [folder]


def _is_sun_seg(root: Path) -> bool:
    return any((root / name).is_dir() for name in ("TrainDataset", "TestEasyDataset", "TestHardDataset"))


def load_sun(root: str | Path, frame_step: int = 1) -> list[Record]:
    """SUN database as distributed, or its SUN-SEG reorganisation (detected from the layout).

    As distributed: folders whose name contains `positive` (polyp cases) or `negative` (non-polyp
    cases), each holding one folder of frames per case. SUN-SEG: `TrainDataset/Frame/<case>/*.jpg`
    (train) and `TestEasyDataset/`, `TestHardDataset/` (test, optionally split into Seen/Unseen),
    all polyp frames. Every `frame_step`-th frame of each case is kept.
    """
    root = _require_dir(Path(root), "SUN database")
    if frame_step < 1:
        raise DataError(f"frame_step must be >= 1, got {frame_step}")
    records: list[Record] = []
    if _is_sun_seg(root):
        for split_dir, split in (
            ("TrainDataset", "train"),
            ("TestEasyDataset", "test"),
            ("TestHardDataset", "test"),
        ):
            base = root / split_dir
            if not base.is_dir():
                continue
            for frame_dir in sorted(p for p in base.rglob("Frame") if p.is_dir()):
                for case in _sun_cases(frame_dir):
                    records += [
                        Record(p, "polyp", split, "unknown", "sun-seg") for p in _frames(case, frame_step)
                    ]
        if not records:
            raise DataError(f"SUN-SEG folder {root} holds no frames under */Frame/<case>/")
        return records
    groups = [
        p for p in sorted(root.iterdir()) if p.is_dir() and re.search("positive|negative", p.name, re.I)
    ]
    if re.search("positive|negative", root.name, re.I):
        groups = [root]
    if not groups:
        raise DataError(
            f"{root} is neither the SUN database (folders named *positive* / *negative*) nor SUN-SEG "
            f"(TrainDataset/, TestEasyDataset/, TestHardDataset/)"
        )
    for group in groups:
        label = "non_polyp" if re.search("negative", group.name, re.I) else "polyp"
        for case in _sun_cases(group):
            records += [Record(p, label, "train", "unknown", "sun") for p in _frames(case, frame_step)]
    if not records:
        raise DataError(f"SUN database folder {root} holds no frames")
    return records


# --- CVC-Clinic --------------------------------------------------------------------------------------

_HEADER_WORDS = re.compile(r"label|histolog|class|diagnos|patholog|image|file|name", re.I)


def _read_label_file(path: Path) -> list[list[str]]:
    text = path.read_text(errors="replace")
    rows = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        delim = next((d for d in (",", ";", "\t") if d in raw), None)
        cells = [c.strip() for c in (raw.split(delim) if delim else raw.split(None, 1))]
        rows.append(cells)
    if rows and all(_HEADER_WORDS.search(c) for c in rows[0][:2]):
        rows = rows[1:]  # a header row
    return rows


def _label_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".txt"))


def load_cvc_classif(root: str | Path, label_map: LabelMap | None = None) -> list[Record]:
    """CVC-ClinicHDclassif: `ROOT/<split>/` (train, validation) each with its images and one label
    file (`*.csv` or `*.txt`, rows of image name and histology, optional header). The official
    validation split becomes the test split, as in the study."""
    root = _require_dir(Path(root), "CVC-ClinicHDclassif")
    label_map = label_map or LabelMap()
    split_dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and _split_of(p.name)]
    if not split_dirs:
        raise DataError(
            f"CVC-ClinicHDclassif folder {root} has no split folders (expected train/ and validation/)"
        )
    records = []
    for split_dir in split_dirs:
        files = _label_files(split_dir)
        if len(files) != 1:
            found = ", ".join(f.name for f in files) or "none"
            raise DataError(f"{split_dir} must hold exactly one label file (*.csv or *.txt); found: {found}")
        images: dict[str, Path] = {}
        for p in list_images(split_dir, recursive=True):
            images.setdefault(p.name, p)
            images.setdefault(p.stem, p)
        for line, row in enumerate(_read_label_file(files[0]), start=1):
            if len(row) < 2:
                raise DataError(f"{files[0]}: row {line} needs an image name and a label, got {row}")
            name, histology = row[0], row[1]
            image = images.get(name) or images.get(Path(name).stem)
            if image is None:
                raise DataError(f"{files[0]}: row {line} names image {name!r}, which is not in {split_dir}")
            label = label_map(histology, where=f"{files[0]} row {line}")
            records.append(Record(image, label, _split_of(split_dir.name) or "train", "sharp", "cvc-classif"))
    return records


def load_cvc_segment(root: str | Path) -> list[Record]:
    """CVC-ClinicHDsegment: `ROOT/images/` (or `Original/`) and `ROOT/masks/` (or `Ground Truth/`,
    `GT/`). The images are used as unlabelled high-quality polyp images."""
    root = _require_dir(Path(root), "CVC-ClinicHDsegment")
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    image_dir = folders.get("images") or folders.get("original")
    if image_dir is None:
        raise DataError(f"CVC-ClinicHDsegment folder {root} has no images/ (or Original/) folder")
    images = list_images(image_dir, recursive=True)
    if not images:
        raise DataError(f"{image_dir} holds no images")
    return [Record(p, "polyp", "train", "sharp", "cvc-segment") for p in images]


LOADERS: dict[str, Callable[..., list[Record]]] = {
    "phantom": load_phantom,
    "image_folder": load_image_folder,
    "csv": load_csv_manifest,
    "sun": load_sun,
    "cvc_classif": load_cvc_classif,
    "cvc_segment": load_cvc_segment,
}


def load_source(source) -> list[Record]:
    """Records of one `config.DataSource`, filtered by its split and labels."""
    label_map = LabelMap(source.label_map)
    kind = source.kind
    if kind == "phantom":
        records = load_phantom(source.path, source.subset)
    elif kind == "sun":
        records = load_sun(source.path, source.frame_step)
    elif kind == "cvc_segment":
        records = load_cvc_segment(source.path)
    elif kind in LOADERS:
        records = LOADERS[kind](source.path, label_map)
    else:
        raise DataError(f"unknown data source kind {kind!r}; expected one of {', '.join(LOADERS)}")
    records = filter_records(records, source.split, source.labels)
    if not records:
        raise DataError(
            f"data source {kind}:{source.path} holds no images of split={source.split} labels={source.labels}"
        )
    return records


def load_any(path: str | Path, kind: str | None = None, label_map: LabelMap | None = None) -> list[Record]:
    """Guess the layout of a path for `data inspect`: a CSV, a phantom folder, or an image folder."""
    path = Path(path)
    if kind:
        if kind not in LOADERS:
            raise DataError(f"unknown data source kind {kind!r}; expected one of {', '.join(LOADERS)}")
        if kind == "phantom":
            return load_csv_manifest(path / "manifest.csv")
        if kind in ("sun", "cvc_segment"):
            return LOADERS[kind](path)
        return LOADERS[kind](path, label_map)
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_csv_manifest(path, label_map)
    if (path / "manifest.csv").is_file():
        return load_csv_manifest(path / "manifest.csv", label_map)
    if path.is_dir() and _is_sun_seg(path):
        return load_sun(path)
    if is_image(path):
        raise DataError(f"{path} is a single image; expected a folder or a CSV manifest")
    return load_image_folder(path, label_map)
