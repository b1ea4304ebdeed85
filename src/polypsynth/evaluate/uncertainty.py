"""Uncertainty of Table 1's balanced accuracies and gains, and the word a gain earns.

Two sources of variation reach a seed-averaged balanced accuracy: the test images (one draw of the
population, shared by every seed) and the classifier's seed. Each is counted once:

    BA_s   = sum_i w_i x_si          x_si: image i judged right by seed s (1/0), or for a gain the
                                     augmented minus the real-only model of the same seed;
                                     w_i = 1 / (classes * images of i's class)
    var    = image part + seed part
           = sum_c w_c^2 n_c (var_i(mean_s x_si) - MS_res,c / k)  +  var_s(BA_s) / k

The image part is the variance of a mean over the test images of each image's seed-averaged score;
the two-way residual mean square MS_res (image x seed) is taken out of it because the seed part,
measured on the same test set, already holds that interaction (taking it out of the seed part
instead, a difference of two estimates, covered 0.90 at 3 seeds). With k seeds the seed part has
k - 1 degrees of freedom: the 95% half-width is t(k - 1) times its root and t(images - classes)
times the image part's root, added in quadrature, so it is Student-t with k - 1 df when seeds
dominate and the normal interval when images do (a Welch-Satterthwaite df, estimated from the same
few seeds, covers only 0.90 at 3 seeds). The effective df of that half-width is reported for the
minimum detectable effect.

One seed cannot measure the seed part. Its interval then covers the test images only (simulated:
0.56 coverage when seeds dominate), so it is marked `seed variance: not measured` and earns no word
but *cannot tell*, unless the user declares the seed-to-seed standard deviation of one classifier's
balanced accuracy (`seed_sd`, e.g. from earlier runs): its square is the seed part (twice that for
a gain, the difference of two independently seeded models), with a normal quantile, and the
interval says `assumed`. With two or more seeds the measured part is used and `seed_sd` is not.

A gain is read against 0 and the minimum gain worth having, `min_gain` (`word`, the one place the
words are decided; they are a type, `Word`):

- *helps*: the interval lies above 0 and reaches `min_gain` (a gain is shown, and one of at least
  the minimum is among the values the data support);
- *below the minimum*: above 0 but wholly below `min_gain` (a real gain too small to be worth having);
- *does not help*: holds 0 but lies wholly below `min_gain`;
- *harms*: wholly below 0;
- *cannot tell*: everything else (it holds both 0 and `min_gain`), and every interval whose seed
  variance was not measured. It states its minimum detectable effect: the true gain that a
  two-sided 5% test sees with 80% power at this standard error (from the images alone, a lower
  bound, when the seed variance is not measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Literal, cast

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.errors import EvalError

LEVEL = 0.95
POWER = 0.8
MIN_GAIN = 0.02  # default: two points of balanced accuracy
MAX_SEED_SD = 0.5  # a balanced accuracy's standard deviation cannot exceed half its range
MIN_TEST = 10  # test images per class below which no verdict is given (with a class of 1, its variance is 0)

SeedVariance = Literal["measured", "assumed", "not measured"]  # the seed part's source
MEASURED: SeedVariance = "measured"
ASSUMED: SeedVariance = "assumed"
NOT_MEASURED: SeedVariance = "not measured"


class Word(StrEnum):
    """What a gain's interval lets one say (module docstring); the report and `judge` print it."""

    HELPS = "helps"
    BELOW_MINIMUM = "below the minimum"
    DOES_NOT_HELP = "does not help"
    HARMS = "harms"
    CANNOT_TELL = "cannot tell"


@dataclass(frozen=True)
class Interval:
    """A seed-averaged balanced accuracy (or gain) with its 95% interval: `std` the spread over
    seeds (None from one seed), `df` the half-width's effective degrees of freedom, the two
    variance parts (the seed part None when not measured) and where the seed part came from."""

    mean: float
    std: float | None
    se: float
    df: float
    ci95: tuple[float, float]
    image_part: float
    seed_part: float | None
    seed_variance: SeedVariance
    seed_sd: float | None
    seeds: int

    def to_dict(self) -> dict:
        """The form results.json holds (the interval a list)."""
        return {**asdict(self), "ci95": list(self.ci95)}

    @classmethod
    def from_dict(cls, d: dict) -> Interval:
        """Back from `to_dict`'s form (the report renders results.json)."""
        return cls(**{f.name: d[f.name] for f in fields(cls)} | {"ci95": tuple(d["ci95"])})


@dataclass(frozen=True)
class Gain(Interval):
    """A gain's interval with its minimum detectable effect, the minimum gain it was read against
    and its word (`conclude`)."""

    mde: float
    min_gain: float
    word: Word

    @classmethod
    def from_dict(cls, d: dict) -> Gain:
        return cast(Gain, super().from_dict({**d, "word": Word(d["word"])}))


def _weights(y_true: np.ndarray) -> np.ndarray:
    counts = np.bincount(y_true, minlength=len(CLASSES))
    if (counts == 0).any():
        raise EvalError(f"the test split needs images of every class, got counts {counts.tolist()}")
    return 1.0 / (len(CLASSES) * counts[y_true])


def _t(q: float, df: float) -> float:
    """The q-quantile of Student's t with df degrees of freedom (the normal's when df is infinite)."""
    from scipy.stats import norm, t

    return float(t.ppf(q, df)) if np.isfinite(df) else float(norm.ppf(q))


def _image_part(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """The image part of the variance (module docstring) and its degrees of freedom."""
    k = len(x)
    part, df = 0.0, 0
    for c in range(len(CLASSES)):
        xc = x[:, y == c]
        n_c = xc.shape[1]
        if n_c < 2:
            continue
        spread = float(np.var(xc.mean(0), ddof=1))
        if k > 1:  # image x seed interaction (two-way residual mean square), also inside var_s(BA_s)
            resid = xc - xc.mean(0, keepdims=True) - xc.mean(1, keepdims=True) + xc.mean()
            spread = max(0.0, spread - float((resid**2).sum()) / ((k - 1) * (n_c - 1)) / k)
        part += spread * n_c * (1.0 / (len(CLASSES) * n_c)) ** 2
        df += n_c - 1
    return part, df


def interval(
    y_true: Sequence[int] | np.ndarray,
    scores: np.ndarray,
    bound: tuple[float, float] = (-1.0, 1.0),
    seed_sd: float | None = None,
    paired: bool = False,
) -> Interval:
    """Mean, standard error, degrees of freedom and 95% interval of sum_i w_i x_si averaged over seeds.
    `scores`: (seeds, images) per-image scores (correct 1/0, or differences of two such: `paired`);
    the interval is clipped to `bound`, the range the quantity can take. `seed_sd`: the declared
    seed-to-seed standard deviation of one model's balanced accuracy, used with one seed only."""
    y = np.asarray(y_true)
    x = np.atleast_2d(np.asarray(scores, np.float64))
    k, n = x.shape
    if n != len(y):
        raise EvalError(f"scores cover {n} images, the test split has {len(y)}")
    per_seed = x @ _weights(y)  # BA (or gain) of each seed
    image_part, image_df = _image_part(x, y)
    if k > 1:
        seed_part, seed_df, source = float(np.var(per_seed, ddof=1)) / k, float(k - 1), MEASURED
    elif seed_sd is not None:
        seed_part, seed_df, source = (2.0 if paired else 1.0) * check_seed_sd(seed_sd) ** 2, np.inf, ASSUMED
    else:
        seed_part, seed_df, source = 0.0, np.inf, NOT_MEASURED
    # Each part's half-width with its own degrees of freedom, added in quadrature: with few seeds a
    # Welch-Satterthwaite df, estimated from the same few seeds, undercovers (0.90 at 3 seeds).
    q = (1 + LEVEL) / 2
    half = float(np.hypot(_t(q, max(image_df, 1)) * np.sqrt(image_part), _t(q, seed_df) * np.sqrt(seed_part)))
    se = float(np.sqrt(image_part + seed_part))
    mean = float(per_seed.mean())
    return Interval(
        mean=mean,
        std=float(np.std(per_seed, ddof=1)) if k > 1 else None,
        se=se,
        df=_effective_df(half, se),
        ci95=(max(mean - half, bound[0]), min(mean + half, bound[1])),
        image_part=float(image_part),
        seed_part=seed_part if source != NOT_MEASURED else None,
        seed_variance=source,
        seed_sd=seed_sd if source == ASSUMED else None,
        seeds=k,
    )


def _effective_df(half: float, se: float) -> float:
    """The degrees of freedom whose t quantile gives this half-width at this error (for the MDE)."""
    from scipy.optimize import brentq

    m = half / se if se > 0 else 0.0
    if m <= _t((1 + LEVEL) / 2, float("inf")) + 1e-12:
        return float("inf")
    return float(brentq(lambda d: _t((1 + LEVEL) / 2, d) - m, 1e-3, 1e7))


def paired_gain(
    y_true: Sequence[int] | np.ndarray,
    diff: np.ndarray,
    min_gain: float = MIN_GAIN,
    seed_sd: float | None = None,
) -> Gain:
    """The gain whose per-image scores are `diff` (seeds, images), differences of two classifiers'
    correct answers paired by seed, with its interval, minimum detectable effect and word."""
    return conclude(interval(y_true, diff, seed_sd=seed_sd, paired=True), min_gain)


def mde(se: float, df: float) -> float:
    """The true effect a two-sided test at 1 - LEVEL sees with probability POWER, at this error."""
    return (_t((1 + LEVEL) / 2, df) + _t(POWER, df)) * se


def word(ci95: Sequence[float], min_gain: float, seed_variance: SeedVariance = MEASURED) -> Word:
    """The one place a gain's word is decided (module docstring)."""
    lo, hi = ci95
    if seed_variance == NOT_MEASURED:
        return Word.CANNOT_TELL
    if hi < 0:
        return Word.HARMS
    if lo > 0:
        return Word.HELPS if hi >= min_gain else Word.BELOW_MINIMUM
    if hi < min_gain:
        return Word.DOES_NOT_HELP
    return Word.CANNOT_TELL


def check_min_gain(min_gain: float) -> float:
    if not 0 < min_gain < 1:
        raise EvalError(f"--min-gain must be in (0, 1) (a balanced-accuracy gain), got {min_gain}")
    return min_gain


def check_seed_sd(seed_sd: float) -> float:
    if not 0 <= seed_sd <= MAX_SEED_SD:
        raise EvalError(
            f"--seed-sd must be in [0, {MAX_SEED_SD}] (a standard deviation of balanced accuracy), got {seed_sd}"
        )
    return seed_sd


def conclude(gain: Interval, min_gain: float = MIN_GAIN) -> Gain:
    """The gain with its minimum detectable effect, the minimum gain and its word."""
    check_min_gain(min_gain)
    return Gain(
        **{f.name: getattr(gain, f.name) for f in fields(Interval)},
        mde=mde(gain.se, gain.df),
        min_gain=min_gain,
        word=word(gain.ci95, min_gain, gain.seed_variance),
    )


def seeds_text(gain: Interval) -> str:
    """'3 seeds', '1 seed, seed variance not measured', '1 seed, seed SD assumed 0.020'."""
    text = f"{gain.seeds} seed{'s' if gain.seeds != 1 else ''}"
    if gain.seed_variance == NOT_MEASURED:
        text += ", seed variance not measured"
    elif gain.seed_variance == ASSUMED:
        text += f", seed SD assumed {gain.seed_sd:.3f}"
    return text


def describe(gain: Gain | dict) -> str:
    """'+0.031 [-0.012, +0.074] (3 seeds): cannot tell (detectable with 80% power from +0.060)';
    `gain` typed, or in results.json's form (the report renders that)."""
    if isinstance(gain, dict):
        gain = Gain.from_dict(gain)
    (lo, hi), w, delta = gain.ci95, gain.word, gain.min_gain
    text = f"{gain.mean:+.3f} [{lo:+.3f}, {hi:+.3f}] ({seeds_text(gain)}): {w}"
    if w == Word.CANNOT_TELL:
        at_least = "at least " if gain.seed_variance == NOT_MEASURED else ""
        text += f" (detectable with 80% power from {at_least}{gain.mde:+.3f})"
    elif w == Word.DOES_NOT_HELP:
        text += f" (upper bound below the minimum gain {delta:+.3f})"
    elif w == Word.BELOW_MINIMUM:
        text += f" (a gain, wholly below the minimum {delta:+.3f})"
    elif w == Word.HARMS:
        text += " (upper bound below 0)"
    return text


def planned_mde(
    test: dict[str, int], seeds: int, seed_sd: float | None = None, recall: dict[str, float] | None = None
) -> dict:
    """Before anyone trains: the smallest balanced-accuracy gain a test split of `test` images per
    class detects with 80% power (two-sided 5%), from `seeds` paired runs. Each image's paired
    difference is taken with the variance of two independent errors at the class's `recall` (0.5,
    the largest, by default), 2 r (1 - r): real classifiers err on the same hard images, which only
    narrows the difference, and averaging seeds is not counted on to narrow it either. The seed
    part is 2 seed_sd^2 / seeds with seeds - 1 degrees of freedom (normal with one seed); without
    `seed_sd` it is left out and the figure is a lower bound."""
    for c in CLASSES:
        if test.get(c, 0) < 2:
            raise EvalError(f"--test needs at least 2 images of {c}, got {test.get(c, 0)}")
    if seeds < 1:
        raise EvalError(f"--seeds must be >= 1, got {seeds}")
    recall = recall or {c: 0.5 for c in CLASSES}
    for c in CLASSES:
        if not 0 <= recall[c] <= 1:
            raise EvalError(f"--recall of {c} must be in [0, 1], got {recall[c]}")
    image = sum(2 * recall[c] * (1 - recall[c]) / (len(CLASSES) ** 2 * test[c]) for c in CLASSES)
    image_df = sum(test[c] - 1 for c in CLASSES)
    seed = 2 * check_seed_sd(seed_sd) ** 2 / seeds if seed_sd is not None else 0.0
    seed_df = float(seeds - 1) if seeds > 1 else np.inf
    q = (1 + LEVEL) / 2
    half = float(np.hypot(_t(q, image_df) * np.sqrt(image), _t(q, seed_df) * np.sqrt(seed)))
    se = float(np.sqrt(image + seed))
    return {
        "test": dict(test),
        "seeds": seeds,
        "seed_sd": seed_sd,
        "recall": recall,
        "se": se,
        "mde": mde(se, _effective_df(half, se)),
        "lower_bound": seed_sd is None,
        "words_possible": seeds > 1 or seed_sd is not None,
    }


def check_test_split(counts: dict[str, int], where: str = "the real test split") -> None:
    """No verdict from fewer than MIN_TEST test images of a class: the error states the smallest
    gain even MIN_TEST of each could detect."""
    short = [c for c in CLASSES if counts.get(c, 0) < MIN_TEST]
    if short:
        at = planned_mde({c: MIN_TEST for c in CLASSES}, 1)["mde"]
        have = " and ".join(f"{counts.get(c, 0)} {c}" for c in CLASSES)
        raise EvalError(
            f"{where} has {have} images; a verdict needs at least {MIN_TEST} of each class (even at "
            f"{MIN_TEST} + {MIN_TEST} a balanced-accuracy gain is detectable only from about {at:+.2f})"
        )
