"""Does a checkpoint copy its training images? Near-copies counted, with an absolute criterion.

A near-copy is a synthetic image that lies closer to some training image than it should:

- in a feature space, closer than `QUANTILE` of the real test images lie to their nearest training
  image (the threshold is that quantile of the test-to-train distances), so images as new as real
  new images fall below it at about `QUANTILE`: the chance rate, the test images' own share;
- in pixel space (pixels.py), the same picture: a synthetic image, as stored or mirrored either way,
  within `max_distance` (correlation 0.97 of 16-px thumbnails by default, the leakage criterion) of
  some image of any training pool (the labelled split and every pool given: stage 1, unlabelled,
  replay) or of a crop of it down to 80% of its side. The test images' share there is 0 by
  construction: an evaluation stops when a test image lies that close to a training image (leakage).

Per checkpoint and space: the count of near-copies, the rate, and its one-sided 95% upper bound
(Clopper-Pearson). A checkpoint *copies* when its rate is shown to exceed the reference rate:
- where the test images' share is 0 (pixel space), the stated `tolerance` (default 1%: a rate a
  user would accept), by an exact one-sided binomial test of rate <= tolerance;
- where it is not (feature spaces), the test images' own share, by a one-sided Fisher exact test
  (both sets' sampling error counted).
The p-values of every checkpoint in every space are corrected together (Holm, family-wise 5%), so a
fresh draw is flagged somewhere in at most 5% of evaluations. Otherwise the result is *not
detected*, with the bound: "rate below X% at 95%". 10% copies among 96 images are flagged; 100
exact copies among 2,000 are (Fisher against a zero share at Holm 0.01 needed 7 of 48, 139 of 2,000).

The positive control's images are real training images, held out fold by fold (sets.py): each fold
is searched against the rest of the training images and the pools, never against itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.errors import EvalError

QUANTILE = 0.05
ALPHA = 0.05  # family-wise, over every (space, checkpoint) pair
LEVEL = 0.95  # of the one-sided upper bound on the copy rate
TOLERANCE = 0.01  # copy rate accepted where real test images show none


@dataclass(frozen=True)
class CopyRate:
    """One judged set's near-copies in one space: the count among its images, the rate with its
    one-sided 95% upper bound, the reference's rate (`chance`: the test images' share) and what the
    reference is, the p-value (raw, and Holm-adjusted over every space and set: `correct`), whether
    it copies, and its median distance to the training images."""

    count: int
    images: int
    near_copies: float
    upper95: float
    chance: float
    reference: str
    p_value: float
    copies: bool  # decided over every space and checkpoint together (correct)
    median_distance: float
    p_adjusted: float | None = None  # set by correct

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.p_adjusted is None:
            del out["p_adjusted"]
        return out


@dataclass(frozen=True)
class Memorisation:
    """The copy check in one space: the test images' median distance to the training images, the
    near-copy threshold (and the test-distance quantile that set it; None in pixel space, where
    the threshold is given), the tolerance, and every judged set's rate."""

    median_test_distance: float
    threshold: float
    tolerance: float
    checkpoints: dict[str, CopyRate]
    quantile: float | None

    def to_dict(self) -> dict:
        return {**asdict(self), "checkpoints": {n: c.to_dict() for n, c in self.checkpoints.items()}}


def check_tolerance(tolerance: float) -> float:
    if not 0 <= tolerance < 1:
        raise EvalError(
            f"--copy-tolerance must be in [0, 1) (a share of the synthetic images), got {tolerance}"
        )
    return tolerance


def upper_bound(k: int, n: int, level: float = LEVEL) -> float:
    """One-sided Clopper-Pearson upper bound on a rate from k of n."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(level, k + 1, n - k))


def nearest_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance of each query row to its nearest reference row."""
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(query)
    return dist[:, 0]


def _p_value(k: int, n: int, test_below: int, n_test: int, tolerance: float) -> tuple[float, str]:
    """One-sided p-value of "copies more than the reference", and what the reference is."""
    from scipy.stats import binom, fisher_exact

    if test_below == 0:
        p = float(binom.sf(k - 1, n, tolerance)) if tolerance > 0 else float(k == 0)
        return p, f"tolerance {tolerance:.0%}"
    table = [[k, n - k], [test_below, n_test - test_below]]
    return float(fisher_exact(table, alternative="greater").pvalue), "test images' share"


def _against(d: np.ndarray, threshold: float, d_test: np.ndarray, tolerance: float) -> CopyRate:
    near = d < threshold
    k, n = int(near.sum()), len(d)
    test_below = int((d_test < threshold).sum())
    p, reference = _p_value(k, n, test_below, len(d_test), tolerance)
    return CopyRate(
        count=k,
        images=n,
        near_copies=k / n,
        upper95=upper_bound(k, n),
        chance=test_below / len(d_test),
        reference=reference,
        p_value=p,
        copies=False,
        median_distance=float(np.median(d)),
    )


def _check(
    d_test: np.ndarray,
    distances: dict[str, np.ndarray],
    threshold: float,
    tolerance: float,
    *,
    quantile: float | None,
    shown_threshold: float | None = None,
) -> Memorisation:
    """Per query set: its near-copies below `threshold` against the test images' own `d_test`
    (`shown_threshold`: the threshold as the user gave it, when `threshold` is a hair above it)."""
    per = {name: _against(d, threshold, d_test, tolerance) for name, d in distances.items()}
    return Memorisation(
        median_test_distance=float(np.median(d_test)),
        threshold=threshold if shown_threshold is None else shown_threshold,
        tolerance=tolerance,
        checkpoints=per,
        quantile=quantile,
    )


def _stack(sets: Mapping[str, np.ndarray], keep: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Class sets stacked in CLASSES order; `keep`: per class, a boolean mask of the rows kept."""
    return np.concatenate([sets[c][keep[c]] if keep is not None else sets[c] for c in CLASSES])


def check(
    train_f: dict,
    test_f: dict,
    synthetic_f: dict[str, dict],
    *,
    control: str | None = None,
    folds: Sequence[Mapping[str, np.ndarray]] = (),
    pools: Sequence[np.ndarray] = (),
    tolerance: float = TOLERANCE,
) -> Memorisation:
    """Per judged set: its near-copies in this feature space (module docstring), with the threshold
    and the median distances (synthetic vs real test) to the training images. `control`: the set
    made of the training images themselves, held out `folds` (per fold, class -> indices into
    train_f's rows): each fold is searched in the rest. `pools`: the features of the other pools
    the model trained on (stage 1, unlabelled, replay), searched for every set."""
    everything = np.concatenate([_stack(train_f), *pools])
    test = _stack(test_f)
    d_test = nearest_distances(test, everything)
    threshold = float(np.quantile(d_test, QUANTILE))
    distances = {
        name: nearest_distances(_stack(syn), everything)
        for name, syn in synthetic_f.items()
        if name != control
    }
    if control is not None:
        distances[control] = np.concatenate([_fold_distances(train_f, fold, pools) for fold in folds])
    return _check(d_test, distances, threshold, tolerance, quantile=QUANTILE)


def _fold_distances(train_f: dict, fold: Mapping[str, np.ndarray], pools: Sequence[np.ndarray]) -> np.ndarray:
    held = {c: np.isin(np.arange(len(train_f[c])), fold[c]) for c in CLASSES}
    rest = {c: ~m for c, m in held.items()}
    return nearest_distances(_stack(train_f, held), np.concatenate([_stack(train_f, rest), *pools]))


def nearest_over(found: Mapping, skip: str | None = None) -> np.ndarray:
    """Per query, the smallest distance over every pool but `skip`."""
    kept = [n.distance for pool, n in found.items() if pool != skip]
    return np.min(np.stack(kept), axis=0)


def pixel_check(
    found: dict,
    test: str,
    max_distance: float,
    *,
    tolerance: float = TOLERANCE,
    control: str | None = None,
    folds: Mapping[str, str] | None = None,
) -> Memorisation:
    """`check` in pixel space over pixels.search's answer `found` (query set -> pool -> Nearest),
    near-copies being within `max_distance`; the test images are the query set `test`. `folds`:
    query set -> the pool it is not searched in (a fold of the control and its own pool); those
    sets are reported together as `control`."""
    folds = folds or {}
    distances = {
        name: nearest_over(per_pool) for name, per_pool in found.items() if name != test and name not in folds
    }
    if folds:
        distances[control or "control"] = np.concatenate(
            [nearest_over(found[q], skip=pool) for q, pool in folds.items()]
        )
    threshold = np.nextafter(max_distance, np.inf)  # within max_distance: d <= max_distance
    return _check(
        nearest_over(found[test]),
        distances,
        float(threshold),
        tolerance,
        quantile=None,
        shown_threshold=max_distance,
    )


def correct(memo: dict[str, Memorisation]) -> dict[str, Memorisation]:
    """Holm's correction over every (space, checkpoint) p-value; `copies` then means the adjusted
    p-value is below ALPHA (each entry keeps its raw p-value and gains `p_adjusted`)."""
    keys = [(space, name) for space, m in memo.items() for name in m.checkpoints]
    p = np.array([memo[s].checkpoints[n].p_value for s, n in keys])
    order = np.argsort(p)
    adjusted = np.empty(len(p))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    rates: dict[str, dict[str, CopyRate]] = {space: {} for space in memo}
    for (space, name), a in zip(keys, adjusted, strict=True):
        rates[space][name] = replace(
            memo[space].checkpoints[name], p_adjusted=float(a), copies=bool(a < ALPHA)
        )
    return {space: replace(m, checkpoints=rates[space]) for space, m in memo.items()}


def status(entry: dict) -> str:
    """'copies' or 'not detected (rate below 3.1% at 95%)'."""
    if entry["copies"]:
        return "copies"
    return f"not detected (rate below {entry['upper95']:.1%} at 95%)"
