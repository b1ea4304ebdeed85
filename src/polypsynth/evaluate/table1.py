"""The study's Table 1 with the controls that say whether it can decide anything.

One classifier (the fine-tuned EfficientNet, or the linear probe on Inception features) is trained
per seed on:
- the whole real train split (the baseline row, as in the study);
- the whole real train split + the synthetic images of each checkpoint (the augmented rows; gain =
  augmented - real);
- the real train split without one of K folds, for every fold (the positive control, cross-fitted:
  its gain is the baseline minus the mean of these, the gain of adding a fold's real images the
  classifier has not seen. If real images cannot be shown to help, no synthetic gain can be: this
  is the experiment's power control);
- real + a checkpoint's synthetic images with AD and NON_AD labels swapped (negative control: if
  wrong labels cost nothing, the classifier does not read the synthetic labels at all).

Every gain is paired by seed and test image, with an interval that counts each source of
variation once, its minimum detectable effect and its word (uncertainty.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate import classify
from polypsynth.evaluate.classify import ClassifierRun, Row
from polypsynth.evaluate.uncertainty import MIN_GAIN, Gain, interval, paired_gain

# run_real(seed) -> run: a classifier trained on the whole real train split.
RunReal = Callable[[int], ClassifierRun]
# run_base(fold, seed) -> run: a classifier trained on the real train split without that fold.
RunBase = Callable[[int, int], ClassifierRun]
# run_augmented(checkpoint, picks, seed, swap) -> run; picks: per class, the added image indices.
RunAugmented = Callable[[object, dict[str, np.ndarray], int, bool], ClassifierRun]


@dataclass(frozen=True)
class Plan:
    """What one Table 1 runs: `seeds` classifiers per row from `base_seed` on, `n_synthetic` images
    added per augmented row, `folds` control folds (0: no control), the checkpoints whose swapped
    labels are tried, the minimum gain and the declared seed SD (used with one seed)."""

    seeds: int
    base_seed: int
    n_synthetic: int
    folds: int = 0
    swap_control: Sequence[str] = ()
    min_gain: float = MIN_GAIN
    seed_sd: float | None = None


@dataclass(frozen=True)
class Table1:
    """One classifier's Table 1: the real row, each augmented row, each row's gain over the real
    one (the positive control's under its name), the label-swapped gains and the control's base
    row; `classifier` names the classifier where the table is the study's own."""

    real: Row
    augmented: dict[str, Row]
    gains: dict[str, Gain]
    swapped: dict[str, Gain]
    control_base: Row | None = None
    classifier: str | None = None

    def to_dict(self) -> dict:
        out: dict = {"classifier": self.classifier} if self.classifier is not None else {}
        return out | {
            "real": self.real.to_dict(),
            "augmented": {n: r.to_dict() for n, r in self.augmented.items()},
            "gains": {n: g.to_dict() for n, g in self.gains.items()},
            "controls": {"swapped": {n: g.to_dict() for n, g in self.swapped.items()}},
            "control_base": self.control_base.to_dict() if self.control_base else None,
        }


def synthetic_subset(sizes: dict[str, int], n: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of n synthetic images split evenly over the classes (without replacement, seeded)."""
    rng = np.random.default_rng(seed)
    return {
        c: np.sort(rng.choice(sizes[c], min(sizes[c], n // len(CLASSES)), replace=False)) for c in CLASSES
    }


def gain_interval(
    real_runs: Sequence[ClassifierRun],
    aug_runs: Sequence[ClassifierRun],
    min_gain: float = MIN_GAIN,
    seed_sd: float | None = None,
) -> Gain:
    """The balanced-accuracy gain of augmented over real-only training, paired by seed (and image),
    with its interval, minimum detectable effect and word against `min_gain`."""
    diff = np.stack([a.correct - r.correct for r, a in zip(real_runs, aug_runs, strict=True)])
    return paired_gain(real_runs[0].y_true, diff, min_gain, seed_sd)


def control_rows(
    real_runs: list[ClassifierRun], bases: list[list[ClassifierRun]], plan: Plan
) -> tuple[Row, Gain]:
    """The control's base row (the mean over folds of each seed's classifiers without a fold) and
    its gain (the whole split's classifier minus that mean, paired by seed and image)."""
    y = real_runs[0].y_true
    base_correct = np.stack([np.mean([r.correct for r in seed_runs], 0) for seed_runs in bases])
    real_correct = np.stack([r.correct for r in real_runs])
    row = replace(
        classify.summarise([r for seed_runs in bases for r in seed_runs]),
        balanced_accuracy=interval(y, base_correct, (0.0, 1.0), plan.seed_sd),
        seeds=plan.seeds,
        folds=plan.folds,
    )
    return row, paired_gain(y, real_correct - base_correct, plan.min_gain, plan.seed_sd)


def run_table(
    checkpoints: Sequence,
    plan: Plan,
    run_real: RunReal,
    run_augmented: RunAugmented | None,
    *,
    run_base: RunBase | None = None,
    control: str | None = None,
) -> Table1:
    """Table 1 for one classifier over `checkpoints` (the positive control not among them);
    `run_augmented` None skips the augmented rows (and the swap control); `run_base` with
    `plan.folds` runs the cross-fitted positive control, reported under the name `control`."""
    seeds = [plan.base_seed + s for s in range(plan.seeds)]
    real_runs = [run_real(s) for s in seeds]
    table = Table1(classify.summarise(real_runs, plan.seed_sd), {}, {}, {})
    if run_augmented is not None:
        _augmented_rows(table, checkpoints, plan, real_runs, run_augmented)
    if run_base is not None and plan.folds and control is not None:  # after the checkpoints' rows
        bases = [[run_base(f, s) for f in range(plan.folds)] for s in seeds]
        base, table.gains[control] = control_rows(real_runs, bases, plan)
        table = replace(table, control_base=base)
    return table


def _augmented_rows(
    table: Table1,
    checkpoints: Sequence,
    plan: Plan,
    real_runs: list[ClassifierRun],
    run_augmented: RunAugmented,
) -> None:
    """Fills the table's augmented rows, their gains and the swapped controls' gains."""
    seeds = [plan.base_seed + s for s in range(plan.seeds)]
    for ck in checkpoints:
        sizes = {c: len(ck.images[c]) for c in CLASSES}
        picks = [synthetic_subset(sizes, plan.n_synthetic, s) for s in seeds]
        runs = [run_augmented(ck, pick, s, False) for pick, s in zip(picks, seeds, strict=True)]
        table.augmented[ck.name] = replace(
            classify.summarise(runs, plan.seed_sd), added={c: len(picks[0][c]) for c in CLASSES}
        )
        table.gains[ck.name] = gain_interval(real_runs, runs, plan.min_gain, plan.seed_sd)
        if ck.name in plan.swap_control:
            swapped = [run_augmented(ck, pick, s, True) for pick, s in zip(picks, seeds, strict=True)]
            table.swapped[ck.name] = gain_interval(real_runs, swapped, plan.min_gain, plan.seed_sd)
