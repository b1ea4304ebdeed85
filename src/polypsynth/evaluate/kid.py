"""Kernel Inception Distance: unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over random subsets (Binkowski et al. 2018), seeded. Works on any feature space."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from polypsynth.evaluate.errors import EvalError

MIN_IMAGES = 10  # below this an unbiased MMD estimate says nothing useful


@dataclass(frozen=True)
class KidResult:
    mean: float
    std: float
    subset_size: int
    subsets: int
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return asdict(self)


FULL_KERNEL_LIMIT = 4096  # up to this many features per set, kernels are computed once


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m = kxx.shape[0]
    sum_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    sum_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sum_xx + sum_yy - 2 * kxy.mean())


def kid(
    a: np.ndarray,
    b: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    names: tuple[str, str] = ("set a", "set b"),
) -> KidResult:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise EvalError(f"KID needs two (N, d) feature arrays of the same d, got {a.shape} and {b.shape}")
    for x, name in ((a, names[0]), (b, names[1])):
        if len(x) < MIN_IMAGES:
            raise EvalError(f"{name} has {len(x)} images; a meaningful KID needs at least {MIN_IMAGES}")
    if subsets < 1:
        raise EvalError(f"KID subsets must be >= 1, got {subsets}")
    size = subset_size
    if size > min(len(a), len(b)):
        size = min(len(a), len(b))
        warnings.warn(
            f"KID subset size {subset_size} exceeds the smaller set ({names[0]}: {len(a)}, {names[1]}: {len(b)}); using {size}",
            stacklevel=2,
        )
    gamma = 1.0 / a.shape[1] if gamma is None else gamma

    def kernel(x, y):
        return (x @ y.T * gamma + coef) ** degree

    rng = np.random.default_rng(seed)
    full = max(len(a), len(b)) <= FULL_KERNEL_LIMIT
    if full:  # every subset indexes the same three matrices: 1/subsets of the arithmetic
        kaa, kbb, kab = kernel(a, a), kernel(b, b), kernel(a, b)
    values = []
    for _ in range(subsets):
        ia = rng.choice(len(a), size, replace=False)
        ib = rng.choice(len(b), size, replace=False)
        if full:
            values.append(_mmd2_from_kernels(kaa[np.ix_(ia, ia)], kbb[np.ix_(ib, ib)], kab[np.ix_(ia, ib)]))
        else:
            xa, xb = a[ia], b[ib]
            values.append(_mmd2_from_kernels(kernel(xa, xa), kernel(xb, xb), kernel(xa, xb)))
    values = np.asarray(values)
    return KidResult(float(values.mean()), float(values.std()), size, subsets, len(a), len(b))


COMPARISONS = (
    # key, synthetic class, real class, better when
    ("syn_AD_vs_real_AD", "AD", "AD", "lower"),
    ("syn_AD_vs_real_NON_AD", "AD", "NON_AD", "higher"),
    ("syn_NON_AD_vs_real_NON_AD", "NON_AD", "NON_AD", "lower"),
    ("syn_NON_AD_vs_real_AD", "NON_AD", "AD", "higher"),
)


def four_comparisons(
    real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray], **kw
) -> dict[str, KidResult]:
    """The study's Table 2 for one checkpoint."""
    return {
        key: kid(synthetic[s], real[r], names=(f"synthetic {s}", f"real {r}"), **kw)
        for key, s, r, _ in COMPARISONS
    }
