"""Per-image scores consistent with published confusion matrices, arranged for the widest interval.

A published Table 1 gives, per seed, how many test images of each class a classifier got right, not
which ones. The interval of a balanced accuracy (or of a gain, paired by image) depends on that
arrangement through its image part only: the mean and the per-seed balanced accuracies (the seed
part) follow from the counts. So the arrangement with the largest image part gives an interval with
the same centre that contains the interval of every other arrangement, and a word read from it holds
whichever arrangement was true:

- an accuracy: every seed's right answers on the same images as far as the counts allow (nested),
  which maximises the spread of the images' seed-averaged scores;
- a gain: in each seed as many images as the counts allow on which exactly one of the two
  classifiers is right (the most discordant pairing), the images the augmented one alone gets right
  first and those the real one alone gets right last in every seed, so the seeds agree as far as
  they can.

The test `tests/evaluate/test_judge.py` checks this bound against random arrangements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.errors import EvalError
from polypsynth.evaluate.uncertainty import check_test_split

Confusion = Mapping[str, Sequence[int]]  # true class -> [predicted AD, predicted NON_AD]


def _right(cm: Confusion) -> dict[str, tuple[int, int]]:
    """Per class (right, images) of one confusion matrix."""
    return {c: (int(cm[c][i]), int(sum(cm[c]))) for i, c in enumerate(CLASSES)}


def labels_of(confusions: Sequence[Confusion], where: str = "table1") -> np.ndarray:
    """The test split's labels (0 AD, 1 NON_AD) that every matrix must share."""
    sizes = {tuple(n for _, n in _right(cm).values()) for cm in confusions}
    if len(sizes) != 1:
        raise EvalError(
            f"{where}: every confusion matrix must count the same test images per class, got {sorted(sizes)}"
        )
    ((n_ad, n_non),) = sizes
    check_test_split({"AD": n_ad, "NON_AD": n_non}, f"{where}'s test split")
    return np.repeat([0, 1], [n_ad, n_non])


def accuracy_scores(confusions: Sequence[Confusion]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, (seeds, images) right 1/0), the seeds' right answers nested within each class."""
    y = labels_of(confusions)
    rows = []
    for cm in confusions:
        row = []
        for right, n in _right(cm).values():
            row += [1.0] * right + [0.0] * (n - right)
        rows.append(row)
    return y, np.array(rows)


def gain_scores(real: Sequence[Confusion], augmented: Sequence[Confusion]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, (seeds, images) augmented minus real right answers) in the most discordant pairing,
    the seeds aligned (module docstring); `real[s]` and `augmented[s]` share seed s."""
    if len(real) != len(augmented):
        raise EvalError(
            f"table1: {len(real)} real run(s) but {len(augmented)} augmented; gains pair them by seed"
        )
    y = labels_of([*real, *augmented])
    rows = []
    for r_cm, a_cm in zip(real, augmented, strict=True):
        row = []
        for (r, n), (a, _) in zip(_right(r_cm).values(), _right(a_cm).values(), strict=True):
            real_only = min(r, n - a)  # real right, augmented wrong: -1
            aug_only = real_only + a - r  # augmented right, real wrong: +1
            row += [1.0] * aug_only + [0.0] * (n - aug_only - real_only) + [-1.0] * real_only
        rows.append(row)
    return y, np.array(rows)
