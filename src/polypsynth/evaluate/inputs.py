"""What every phase of an evaluation reads (run.py): the options, the real sets with the control's
folds, the checkpoints, the sets judged (every checkpoint, then the control), the generator's view;
and one feature space's features of all of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.features import Extractor, GeneratorView, extract
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.sets import Checkpoint, RealData


@dataclass(frozen=True)
class Inputs:
    options: EvalOptions
    real: RealData  # with its control folds
    checkpoints: list[Checkpoint]
    judged: list[Checkpoint]  # the checkpoints, then the control
    resolution: int
    view: GeneratorView
    progress: bool

    @property
    def control(self) -> Checkpoint:
        return self.judged[-1]

    @property
    def synthetic_count(self) -> int:
        """Synthetic images added to the real training split in an augmentation run."""
        return round(self.options.synthetic_share * sum(len(v) for v in self.real.train.values()))

    def features(self, extractor: Extractor, paths: list[Path], desc: str) -> np.ndarray:
        cache = Path(self.options.cache_dir) if self.options.cache_dir else None
        return extract(extractor, paths, cache, desc=desc, progress=self.progress, view=self.view)


@dataclass(frozen=True)
class Space:
    """One feature space's features: class -> (N, d) for the real train and test splits, judged
    set -> class -> (N, d) for the synthetic sets (the control's are the train split's), and the
    extra training pools' (copy check)."""

    real: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    synthetic: dict[str, dict[str, np.ndarray]]
    pools: list[np.ndarray]


def labelled(sets: dict, picks: dict[str, np.ndarray] | None = None) -> tuple[list, list[int]]:
    """Items and labels (index into CLASSES) of class -> items, optionally only the picked indices."""
    chosen = {c: [sets[c][i] for i in picks[c]] if picks else list(sets[c]) for c in CLASSES}
    items = [x for c in CLASSES for x in chosen[c]]
    labels = [i for i, c in enumerate(CLASSES) for _ in chosen[c]]
    return items, labels


def paths_of(sets: dict[str, list[Path]]) -> list[Path]:
    return [p for c in CLASSES for p in sets[c]]


def swap(labels: list[int]) -> list[int]:
    return [len(CLASSES) - 1 - y for y in labels]


def recognised(predict, sets: dict) -> dict[str, float]:
    """Per class, the share of a set that `predict` assigns to that class (class fidelity)."""
    return {c: float((np.asarray(predict(sets[c])) == i).mean()) for i, c in enumerate(CLASSES)}
