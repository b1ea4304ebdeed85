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
from dataclasses import dataclass

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate import classify
from polypsynth.evaluate.uncertainty import MIN_GAIN, conclude, gain_interval, interval

# run_real(seed) -> run: a classifier trained on the whole real train split.
RunReal = Callable[[int], dict]
# run_base(fold, seed) -> run: a classifier trained on the real train split without that fold.
RunBase = Callable[[int, int], dict]
# run_augmented(checkpoint, picks, seed, swap) -> run; picks: per class, the added image indices.
RunAugmented = Callable[[object, dict[str, np.ndarray], int, bool], dict]


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


def synthetic_subset(sizes: dict[str, int], n: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of n synthetic images split evenly over the classes (without replacement, seeded)."""
    rng = np.random.default_rng(seed)
    return {
        c: np.sort(rng.choice(sizes[c], min(sizes[c], n // len(CLASSES)), replace=False)) for c in CLASSES
    }


def _correct(run: dict) -> np.ndarray:
    return (np.asarray(run["y_pred"]) == np.asarray(run["y_true"])).astype(np.float64)


def control_rows(real_runs: list[dict], bases: list[list[dict]], plan: Plan) -> tuple[dict, dict]:
    """The control's base row (the mean over folds of each seed's classifiers without a fold) and
    its gain (the whole split's classifier minus that mean, paired by seed and image)."""
    y = real_runs[0]["y_true"]
    base_correct = np.stack([np.mean([_correct(r) for r in seed_runs], 0) for seed_runs in bases])
    real_correct = np.stack([_correct(r) for r in real_runs])
    row = classify.summarise([r for seed_runs in bases for r in seed_runs])
    row["balanced_accuracy"] = interval(y, base_correct, (0.0, 1.0), plan.seed_sd)
    row.update(seeds=plan.seeds, folds=plan.folds)
    gain = conclude(
        interval(y, real_correct - base_correct, seed_sd=plan.seed_sd, paired=True), plan.min_gain
    )
    return row, gain


def run_table(
    checkpoints: Sequence,
    plan: Plan,
    run_real: RunReal,
    run_augmented: RunAugmented | None,
    *,
    run_base: RunBase | None = None,
    control: str | None = None,
) -> dict:
    """Table 1 for one classifier over `checkpoints` (the positive control not among them);
    `run_augmented` None skips the augmented rows (and the swap control); `run_base` with
    `plan.folds` runs the cross-fitted positive control, reported under the name `control`."""
    seeds = [plan.base_seed + s for s in range(plan.seeds)]
    real_runs = [run_real(s) for s in seeds]
    out: dict = {
        "real": classify.summarise(real_runs, plan.seed_sd),
        "augmented": {},
        "gains": {},
        "controls": {"swapped": {}},
        "control_base": None,
    }
    if run_augmented is not None:
        _augmented_rows(out, checkpoints, plan, real_runs, run_augmented)
    if run_base is not None and plan.folds and control is not None:  # after the checkpoints' rows
        bases = [[run_base(f, s) for f in range(plan.folds)] for s in seeds]
        out["control_base"], out["gains"][control] = control_rows(real_runs, bases, plan)
    return out


def _augmented_rows(
    out: dict, checkpoints: Sequence, plan: Plan, real_runs: list[dict], run_augmented: RunAugmented
):
    seeds = [plan.base_seed + s for s in range(plan.seeds)]
    for ck in checkpoints:
        sizes = {c: len(ck.images[c]) for c in CLASSES}
        picks = [synthetic_subset(sizes, plan.n_synthetic, s) for s in seeds]
        runs = [run_augmented(ck, pick, s, False) for pick, s in zip(picks, seeds, strict=True)]
        out["augmented"][ck.name] = {
            **classify.summarise(runs, plan.seed_sd),
            "added": {c: len(picks[0][c]) for c in CLASSES},
        }
        out["gains"][ck.name] = gain_interval(real_runs, runs, plan.min_gain, plan.seed_sd)
        if ck.name in plan.swap_control:
            swapped = [run_augmented(ck, pick, s, True) for pick, s in zip(picks, seeds, strict=True)]
            out["controls"]["swapped"][ck.name] = gain_interval(
                real_runs, swapped, plan.min_gain, plan.seed_sd
            )
