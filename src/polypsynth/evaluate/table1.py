"""The study's Table 1 with the controls that say whether it can decide anything.

One classifier (the fine-tuned EfficientNet, or the linear probe on Inception features) is trained
per seed on:
- all real training images (the baseline row);
- real + the synthetic images of each checkpoint (the augmented rows; gain = augmented - real);
- half of the real training images, stratified (power control: `more_real` is the gain from the
  other half of the *real* data; if the classifier cannot measure that, it cannot measure what
  synthetic data adds, and the verdict says the experiment cannot decide);
- real + a checkpoint's synthetic images with AD and NON_AD labels swapped (negative control:
  if wrong labels cost nothing, the classifier does not read the synthetic labels at all).

Every gain is paired by seed and carries a hierarchical bootstrap interval over test images and
seeds (classify.gain_interval)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate import classify

# run_real(indices or None, seed) -> run; indices: per class, the real training images to use.
RunReal = Callable[[dict[str, np.ndarray] | None, int], dict]
# run_augmented(checkpoint, picks, seed, swap) -> run; picks: per class, synthetic image indices.
RunAugmented = Callable[[object, dict[str, np.ndarray], int, bool], dict]


def synthetic_subset(sizes: dict[str, int], n: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of n synthetic images split evenly over the classes (without replacement, seeded)."""
    rng = np.random.default_rng(seed)
    return {
        c: np.sort(rng.choice(sizes[c], min(sizes[c], n // len(CLASSES)), replace=False)) for c in CLASSES
    }


def real_half(sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """A stratified random half of the real training images (at least one per class), seeded."""
    rng = np.random.default_rng(seed)
    return {c: np.sort(rng.choice(sizes[c], max(1, sizes[c] // 2), replace=False)) for c in CLASSES}


def run_table(
    checkpoints: Sequence,
    real_sizes: dict[str, int],
    seeds: int,
    base_seed: int,
    n_synthetic: int,
    run_real: RunReal,
    run_augmented: RunAugmented | None,
    swap_control: Sequence[str] = (),
) -> dict:
    """Table 1 for one classifier; `run_augmented` None skips the synthetic rows (and the swap
    control); `swap_control`: the checkpoints whose label-swapped images are tried."""
    real_runs = [run_real(None, base_seed + s) for s in range(seeds)]
    half_runs = [run_real(real_half(real_sizes, base_seed + s), base_seed + s) for s in range(seeds)]
    out = {
        "real": classify.summarise(real_runs),
        "augmented": {},
        "gains": {},
        "controls": {
            "real_half": classify.summarise(half_runs),
            "more_real": classify.gain_interval(half_runs, real_runs),
            "swapped": {},
        },
    }
    if run_augmented is None:
        return out
    for ck in checkpoints:
        sizes = {c: len(ck.images[c]) for c in CLASSES}
        picks = [synthetic_subset(sizes, n_synthetic, base_seed + s) for s in range(seeds)]
        runs = [run_augmented(ck, picks[s], base_seed + s, False) for s in range(seeds)]
        out["augmented"][ck.name] = classify.summarise(runs)
        out["gains"][ck.name] = classify.gain_interval(real_runs, runs)
        if ck.name in swap_control:
            swapped = [run_augmented(ck, picks[s], base_seed + s, True) for s in range(seeds)]
            out["controls"]["swapped"][ck.name] = classify.gain_interval(real_runs, swapped)
    return out


def power(table: dict) -> dict:
    """Whether the experiment can see a gain of the size it is asked about: the gain from doubling
    the real training data must be clearly positive (95% interval above zero)."""
    more = table["controls"]["more_real"]
    return {**more, "powered": bool(more["ci95"][0] > 0)}
