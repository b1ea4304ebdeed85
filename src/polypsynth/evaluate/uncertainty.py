"""Uncertainty of Table 1's balanced accuracies and gains, and what a gain lets one conclude.

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
times the image part's root, added in quadrature, so it is Student-t with k - 1 df when seeds dominate and
the normal interval when images do (a Welch-Satterthwaite df, estimated from the same few seeds,
covers only 0.90 at 3 seeds). The effective df of that half-width is reported for the minimum
detectable effect. With one seed the seed part cannot be measured; the interval then covers the
test images only and says so (`seed_part` None).

A gain is read against a margin delta (the smallest gain worth having): *helps* when its interval
lies above 0, *does not help* when its interval lies below delta, *cannot tell* otherwise. Every
gain states its minimum detectable effect: the true gain that a two-sided 5% test would see with
80% power at this standard error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.errors import EvalError

LEVEL = 0.95
POWER = 0.8
MARGIN = 0.02  # default delta: two points of balanced accuracy


def _weights(y_true: np.ndarray) -> np.ndarray:
    counts = np.bincount(y_true, minlength=len(CLASSES))
    if (counts == 0).any():
        raise EvalError(f"the test split needs images of every class, got counts {counts.tolist()}")
    return 1.0 / (len(CLASSES) * counts[y_true])


def _t(q: float, df: float) -> float:
    """The q-quantile of Student's t with df degrees of freedom (the normal's when df is infinite)."""
    from scipy.stats import norm, t

    return float(t.ppf(q, df)) if np.isfinite(df) else float(norm.ppf(q))


def interval(y_true: Sequence[int], scores: np.ndarray, bound: tuple[float, float] = (-1.0, 1.0)) -> dict:
    """Mean, standard error, degrees of freedom and 95% interval of sum_i w_i x_si averaged over seeds.
    `scores`: (seeds, images) per-image scores (correct 1/0, or differences of two such); the
    interval is clipped to `bound`, the range the quantity can take."""
    y = np.asarray(y_true)
    x = np.atleast_2d(np.asarray(scores, np.float64))
    k, n = x.shape
    if n != len(y):
        raise EvalError(f"scores cover {n} images, the test split has {len(y)}")
    w = _weights(y)
    per_seed = x @ w  # BA (or gain) of each seed
    image_part, image_df = 0.0, 0
    for c in range(len(CLASSES)):
        xc = x[:, y == c]
        n_c = xc.shape[1]
        if n_c < 2:
            continue
        spread = float(np.var(xc.mean(0), ddof=1))
        if k > 1:  # image x seed interaction (two-way residual mean square), also inside var_s(BA_s)
            resid = xc - xc.mean(0, keepdims=True) - xc.mean(1, keepdims=True) + xc.mean()
            spread = max(0.0, spread - float((resid**2).sum()) / ((k - 1) * (n_c - 1)) / k)
        image_part += spread * n_c * (1.0 / (len(CLASSES) * n_c)) ** 2
        image_df += n_c - 1
    seed_part = float(np.var(per_seed, ddof=1)) / k if k > 1 else None
    # Each part's half-width with its own degrees of freedom, added in quadrature: with few seeds a
    # Welch-Satterthwaite df, estimated from the same few seeds, undercovers (0.90 at 3 seeds).
    half = float(
        np.hypot(
            _t((1 + LEVEL) / 2, max(image_df, 1)) * np.sqrt(image_part),
            _t((1 + LEVEL) / 2, k - 1) * np.sqrt(seed_part) if seed_part else 0.0,
        )
    )
    se = float(np.sqrt(image_part + (seed_part or 0.0)))
    mean = float(per_seed.mean())
    return {
        "mean": mean,
        "std": float(np.std(per_seed, ddof=1)) if k > 1 else None,  # spread over seeds
        "se": se,
        "df": _effective_df(half, se),
        "ci95": [max(mean - half, bound[0]), min(mean + half, bound[1])],
        "image_part": float(image_part),
        "seed_part": seed_part,  # None: one seed, its variation not measured
        "seeds": k,
    }


def _effective_df(half: float, se: float) -> float:
    """The degrees of freedom whose t quantile gives this half-width at this error (for the MDE)."""
    from scipy.optimize import brentq

    m = half / se if se > 0 else 0.0
    if m <= _t((1 + LEVEL) / 2, float("inf")) + 1e-12:
        return float("inf")
    return float(brentq(lambda d: _t((1 + LEVEL) / 2, d) - m, 1e-3, 1e7))


def _correct(run: dict) -> np.ndarray:
    return (np.asarray(run["y_pred"]) == np.asarray(run["y_true"])).astype(np.float64)


def accuracy_interval(runs: Sequence[dict]) -> dict:
    """The seed-averaged balanced accuracy of classifier runs judged on one test split."""
    return interval(runs[0]["y_true"], np.stack([_correct(r) for r in runs]), bound=(0.0, 1.0))


def gain_interval(real_runs: Sequence[dict], aug_runs: Sequence[dict], margin: float = MARGIN) -> dict:
    """The balanced-accuracy gain of augmented over real-only training, paired by seed (and image),
    with its interval, minimum detectable effect and conclusion against `margin`."""
    diff = np.stack([_correct(a) - _correct(r) for r, a in zip(real_runs, aug_runs, strict=True)])
    return conclude(interval(real_runs[0]["y_true"], diff), margin)


def mde(se: float, df: float) -> float:
    """The true effect a two-sided test at 1 - LEVEL sees with probability POWER, at this error."""
    return (_t((1 + LEVEL) / 2, df) + _t(POWER, df)) * se


def word(ci95: Sequence[float], margin: float) -> str:
    lo, hi = ci95
    if lo > 0:
        return "helps"
    if hi < margin:
        return "does not help"
    return "cannot tell"


def check_margin(margin: float) -> float:
    if not 0 < margin < 1:
        raise EvalError(f"--margin must be in (0, 1) (a balanced-accuracy gain), got {margin}")
    return margin


def conclude(gain: dict, margin: float = MARGIN) -> dict:
    check_margin(margin)
    return {**gain, "mde": mde(gain["se"], gain["df"]), "margin": margin, "word": word(gain["ci95"], margin)}


def describe(gain: dict) -> str:
    """'+0.031 [-0.012, +0.074]: cannot tell (smallest detectable +0.060)'."""
    lo, hi = gain["ci95"]
    text = f"{gain['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]: {gain['word']}"
    if gain["word"] == "cannot tell":
        text += f" (detectable with 80% power from {gain['mde']:+.3f})"
    elif gain["word"] == "does not help":
        text += f" (upper bound below the margin {gain['margin']:+.3f})"
    return text
