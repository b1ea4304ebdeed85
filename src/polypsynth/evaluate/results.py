"""What one evaluation found, typed until `Evaluation.to_dict`, the one writer of results.json's
form; the report (report.py, tables.py) renders that dict, so a report shows exactly what its
results.json holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.kid import KidResult, KidTable
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.sets import Checkpoint, RealData
from polypsynth.evaluate.tsne import TsneMap

EXAMPLES = 20  # near-duplicate pairs written out (all are counted)


def counts(images: dict[str, list[Path]]) -> dict[str, int]:
    return {c: len(images[c]) for c in CLASSES}


@dataclass(frozen=True)
class Leakage:
    """Near-duplicate (test image, training-pool image) pairs, one per pair, and the thresholds
    that found them."""

    pairs: list[dict]
    max_hash_distance: int
    max_pixel_distance: float
    pools: dict[str, int]  # pool name -> images searched

    def to_dict(self) -> dict:
        return {
            "pairs": len(self.pairs),
            "max_distance": self.max_hash_distance,
            "max_pixel_distance": self.max_pixel_distance,
            "pools": self.pools,
            "examples": self.pairs[:EXAMPLES],
        }


@dataclass(frozen=True)
class Fidelity:
    """Class fidelity: per judged set, class -> the share its judge names that class; the judge
    (kind, balanced accuracy, recall and test images per class: the thresholds); the same judge on
    real test images through the autoencoder, when given; the probe's Table 1 when Inception
    features were computed (the probe is then the judge); the positive control's own judges (each
    fold's trained without it), with their recall."""

    shares: dict[str, dict[str, float]]
    judge: dict
    reconstructed: dict[str, float] | None = None
    reconstructed_images: dict[str, int] | None = None
    probe: dict | None = None
    control_judge: dict | None = None

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
    separation: dict[str, dict]
    memorisation: dict[str, dict]
    fidelity: Fidelity
    classification: dict  # Table 1 with the fine-tuned EfficientNet (table1.run_table)
    selection: dict  # selection.select, with the leakage warning in its verdict
    provenance: dict | None = None  # set by the job that ran it (versions, date, inputs)

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
            "separation": self.separation,
            "memorisation": self.memorisation,
            "fidelity": self.fidelity.shares,
            "fidelity_judge": self.fidelity.judge,
            "fidelity_control_judge": self.fidelity.control_judge,
            "fidelity_reconstructed": self.fidelity.reconstructed_dict(),
            "classification": self.classification,
            "probe": self.fidelity.probe,
            "selection": self.selection,
        }
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out
