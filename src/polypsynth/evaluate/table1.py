"""The study's Table 1 with the controls that say whether it can decide anything.

One classifier (the fine-tuned EfficientNet, or the linear probe on Inception features) is trained
per seed on:
- the real training images (the baseline row; the positive control's images held out, sets.py);
- real + the synthetic images of each checkpoint (the augmented rows; gain = augmented - real);
- real + as many held-out real images (the positive control, judged like a checkpoint: if real
  images the classifier has not seen cannot be shown to help, no synthetic gain can be: this is
  the experiment's power control);
- real + a checkpoint's synthetic images with AD and NON_AD labels swapped (negative control:
  if wrong labels cost nothing, the classifier does not read the synthetic labels at all).

Every gain is paired by seed and test image, with an interval that counts each source of
variation once, its minimum detectable effect and its conclusion (uncertainty.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate import classify
from polypsynth.evaluate.uncertainty import MARGIN, gain_interval

# run_real(seed) -> run: a classifier trained on the real training images only.
RunReal = Callable[[int], dict]
# run_augmented(checkpoint, picks, seed, swap) -> run; picks: per class, the added image indices.
RunAugmented = Callable[[object, dict[str, np.ndarray], int, bool], dict]


def synthetic_subset(sizes: dict[str, int], n: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of n synthetic images split evenly over the classes (without replacement, seeded)."""
    rng = np.random.default_rng(seed)
    return {
        c: np.sort(rng.choice(sizes[c], min(sizes[c], n // len(CLASSES)), replace=False)) for c in CLASSES
    }


def run_table(
    checkpoints: Sequence,
    seeds: int,
    base_seed: int,
    n_synthetic: int,
    run_real: RunReal,
    run_augmented: RunAugmented | None,
    swap_control: Sequence[str] = (),
    margin: float = MARGIN,
) -> dict:
    """Table 1 for one classifier over `checkpoints` (the positive control among them);
    `run_augmented` None skips the augmented rows (and the swap control); `swap_control`: the
    checkpoints whose label-swapped images are tried."""
    real_runs = [run_real(base_seed + s) for s in range(seeds)]
    out = {"real": classify.summarise(real_runs), "augmented": {}, "gains": {}, "controls": {"swapped": {}}}
    if run_augmented is None:
        return out
    for ck in checkpoints:
        sizes = {c: len(ck.images[c]) for c in CLASSES}
        picks = [synthetic_subset(sizes, n_synthetic, base_seed + s) for s in range(seeds)]
        runs = [run_augmented(ck, picks[s], base_seed + s, False) for s in range(seeds)]
        out["augmented"][ck.name] = {
            **classify.summarise(runs),
            "added": {c: len(picks[0][c]) for c in CLASSES},
        }
        out["gains"][ck.name] = gain_interval(real_runs, runs, margin)
        if ck.name in swap_control:
            swapped = [run_augmented(ck, picks[s], base_seed + s, True) for s in range(seeds)]
            out["controls"]["swapped"][ck.name] = gain_interval(real_runs, swapped, margin)
    return out
