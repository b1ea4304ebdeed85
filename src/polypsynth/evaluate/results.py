"""What one evaluation found, typed until `Evaluation.to_dict`, the one writer of results.json's
form; the report (report.py, tables.py) renders that dict, so a report shows exactly what its
results.json holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.kid import KidResult, KidTable
from polypsynth.evaluate.memorisation import Memorisation
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.picks import Judge, Selection
from polypsynth.evaluate.probe import ProbeExperiments
from polypsynth.evaluate.separation import SetSeparation
from polypsynth.evaluate.sets import Checkpoint, RealData
from polypsynth.evaluate.table1 import Table1
from polypsynth.evaluate.tsne import TsneMap

EXAMPLES = 20  # near-duplicate pairs written out (all are counted)


def _dict(value) -> dict | None:
    return value.to_dict() if value is not None else None


def counts(images: dict[str, list[Path]]) -> dict[str, int]:
    return {c: len(images[c]) for c in CLASSES}


@dataclass(frozen=True)
class LeakPair:
    """A test image and a training-pool image that show one picture (or one lesion): the pool, the
    distance in the space that found them (hash bits, pixel distance, or 0 for a shared lesion),
    and the flip and crop of the pool image that matched."""

    test: str
    pool: str
    image: str
    distance: float
    flip: str
    crop: str
    space: str


@dataclass(frozen=True)
class Leakage:
    """Near-duplicate (test image, training-pool image) pairs, one per pair, and the thresholds
    that found them."""

    pairs: list[LeakPair]
    max_hash_distance: int
    max_pixel_distance: float
    pools: dict[str, int]  # pool name -> images searched

    def to_dict(self) -> dict:
        return {
            "pairs": len(self.pairs),
            "max_distance": self.max_hash_distance,
            "max_pixel_distance": self.max_pixel_distance,
            "pools": self.pools,
            "examples": [asdict(p) for p in self.pairs[:EXAMPLES]],
        }


@dataclass(frozen=True)
class EvalProvenance:
    """Where an evaluation's numbers came from: the version, the date, the real data, the samples
    folder, the reconstructions (None: none given) and the training pools searched for copies."""

    polypsynth: str
    date: str
    real: str
    synthetic: str
    reconstructions: str | None
    train_pools: list[str]


@dataclass(frozen=True)
class Fidelity:
    """Class fidelity: per judged set, class -> the share its judge names that class; the judge
    (kind, balanced accuracy, recall and test images per class: the thresholds); the same judge on
    real test images through the autoencoder, when given; the probe's Table 1 when Inception
    features were computed (the probe is then the judge); the positive control's own judges (each
    fold's trained without it), with their recall."""

    shares: dict[str, dict[str, float]]
    judge: Judge
    reconstructed: dict[str, float] | None = None
    reconstructed_images: dict[str, int] | None = None
    probe: ProbeExperiments | None = None
    control_judge: Judge | None = None

    def reconstructed_dict(self) -> dict | None:
        if self.reconstructed is None or self.reconstructed_images is None:
            return None
        return {**self.reconstructed, "images": self.reconstructed_images}


@dataclass
class Evaluation:
    """Every number of one evaluation; `maps` are drawn, and only their scores written."""

    options: EvalOptions
    resolution: int  # the side every image was compared at (the generator's)
    real: RealData  # with the positive control's folds
    checkpoints: list[Checkpoint]
    control: Checkpoint
    leakage: Leakage
    kid: dict[str, dict[str, KidTable]]  # feature space -> judged set -> kid_table
    kid_scale: dict[str, KidResult]  # feature space -> KID(real AD, real NON_AD)
    maps: dict[str, TsneMap]  # checkpoint -> t-SNE map in the primary space
    separation: dict[str, SetSeparation]
    memorisation: dict[str, Memorisation]
    fidelity: Fidelity
    classification: Table1  # with the fine-tuned EfficientNet (table1.run_table)
    selection: Selection  # selection.select, with the leakage warning in its verdict
    provenance: EvalProvenance | None = None  # set by the job that ran it

    @property
    def primary_features(self) -> str:
        return self.options.features[0]

    def to_dict(self) -> dict:
        """The form of results.json (plain JSON types; the maps' points left out)."""
        out = {
            "options": {**asdict(self.options), "classifier": asdict(self.options.classifier)},
            "resolution": self.resolution,
            "checkpoints": [
                {"name": c.name, "step": c.step, "images": counts(c.images)} for c in self.checkpoints
            ],
            "control": {
                "name": self.control.name,
                "images": counts(self.control.images),
                "folds": [counts(self.real.fold(f)) for f in range(len(self.real.folds))],
                "grouped_by": self.options.group_by,
            },
            "real": {split: counts(getattr(self.real, split)) for split in ("train", "test")},
            "primary_features": self.primary_features,
            "leakage": self.leakage.to_dict(),
            "kid": {
                space: {name: {k: v.as_dict() for k, v in table.items()} for name, table in sets.items()}
                for space, sets in self.kid.items()
            },
            "kid_scale": {space: k.as_dict() for space, k in self.kid_scale.items()},
            "tsne": {
                name: {"knn_accuracy": m.knn_accuracy, "knn_chance": m.knn_chance, "silhouette": m.silhouette}
                for name, m in self.maps.items()
            },
            "separation": {name: s.to_dict() for name, s in self.separation.items()},
            "memorisation": {space: m.to_dict() for space, m in self.memorisation.items()},
            "fidelity": self.fidelity.shares,
            "fidelity_judge": self.fidelity.judge.to_dict(),
            "fidelity_control_judge": _dict(self.fidelity.control_judge),
            "fidelity_reconstructed": self.fidelity.reconstructed_dict(),
            "classification": self.classification.to_dict(),
            "probe": _dict(self.fidelity.probe),
            "selection": self.selection.to_dict(),
        }
        if self.provenance is not None:
            out["provenance"] = asdict(self.provenance)
        return out
