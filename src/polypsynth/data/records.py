"""The one record type every dataset loader returns, and the label map."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from polypsynth.errors import DataError

AD, NON_AD, POLYP, NON_POLYP = "AD", "NON_AD", "polyp", "non_polyp"
LABELS = (AD, NON_AD, POLYP, NON_POLYP)
CLASSES = (AD, NON_AD)  # the pathologies the generator is conditioned on
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MANIFEST_COLUMNS = ("path", "label", "split", "quality", "source", "seed")


@dataclass(frozen=True)
class Record:
    """One image of a data set."""

    path: Path
    label: str  # AD, NON_AD, polyp or non_polyp
    split: str  # train or test
    quality: str = "unknown"  # sharp, blurred, overexposed or unknown
    source: str = ""  # which data set (and subset) it came from, e.g. phantom/classif, sun
    seed: int | None = None  # phantom images: the seed that renders it again


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


_BUILTIN = {
    AD: [
        "ad",
        "adenoma",
        "adenomatous",
        "adenomatous polyp",
        "tubular adenoma",
        "tubulovillous adenoma",
        "villous adenoma",
        "low grade adenoma",
        "high grade adenoma",
        "traditional serrated adenoma",
        "neoplastic",
        "nice 2",
        "nice type 2",
    ],
    NON_AD: [
        "non ad",
        "nonad",
        "non adenoma",
        "nonadenoma",
        "non adenomatous",
        "hyperplastic",
        "hyperplastic polyp",
        "hp",
        "non neoplastic",
        "nonneoplastic",
        "inflammatory",
        "inflammatory polyp",
        "nice 1",
        "nice type 1",
    ],
    POLYP: ["polyp", "polyps", "positive"],
    NON_POLYP: ["non polyp", "nonpolyp", "no polyp", "negative", "normal"],
}


class LabelMap:
    """Maps the label names found in data sets to AD / NON_AD / polyp / non_polyp.

    The built-in names cover common histology wording (adenoma, tubular adenoma -> AD;
    hyperplastic, non-adenoma, non-neoplastic -> NON_AD). Sessile serrated lesions are left out on
    purpose: whether they count as AD is a clinical choice, so such a label is an error until the
    user maps it (`extra={"sessile serrated lesion": "AD"}`).
    """

    def __init__(self, extra: Mapping[str, str] | None = None):
        self._map = {_norm(name): label for label, names in _BUILTIN.items() for name in names}
        for name, label in (extra or {}).items():
            if label not in LABELS:
                raise DataError(
                    f"label map: {name!r} maps to {label!r}; targets must be one of {', '.join(LABELS)}"
                )
            self._map[_norm(name)] = label

    def __call__(self, name: str, where: str = "") -> str:
        label = self._map.get(_norm(name))
        if label is None:
            known = ", ".join(sorted(self._map))
            place = f" in {where}" if where else ""
            raise DataError(
                f"unknown label {name!r}{place}; known labels: {known} (map others with --label NAME=LABEL, "
                "or label_map in a training config)"
            )
        return label

    def known(self) -> list[str]:
        return sorted(self._map)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if is_image(p))


def filter_records(
    records: Iterable[Record], split: str | None = None, labels: Iterable[str] | None = None
) -> list[Record]:
    keep = set(labels) if labels is not None else None
    return [r for r in records if (split is None or r.split == split) and (keep is None or r.label in keep)]
