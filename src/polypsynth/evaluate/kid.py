"""Kernel Inception Distance: unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^3
(Binkowski et al. 2018), with a standard error whose resampling unit is the image. Works on any
feature space.

- Sets of up to FULL_KERNEL_LIMIT images: one estimate over every image of both sets (the
  U-statistic; no subset sampling, whose spread is 0 when both sets equal the subset size), and its
  standard error by the two-sample jackknife (delete one image of either set; Arvesen 1969).
- Larger sets: the mean of the estimates on disjoint subsets of `subset_size` images of each set,
  and the standard error of that mean (spread of the disjoint estimates / sqrt(their number)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from polypsynth.errors import EvalError

MIN_IMAGES = 10  # below this an unbiased MMD estimate says nothing useful
FULL_KERNEL_LIMIT = 4096  # up to this many features per set, one estimate over all images


@dataclass(frozen=True)
class KidResult:
    mean: float
    se: float  # standard error of `mean` over images (jackknife, or disjoint subsets)
    method: str  # "jackknife" or "disjoint subsets"
    subset_size: int  # images of each set per estimate (all of the smaller set for the jackknife)
    subsets: int  # estimates averaged (1 for the jackknife)
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return asdict(self)


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = kxx.shape[0], kyy.shape[0]
    sum_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    sum_yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2 * kxy.mean())


def _leave_one_out(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray):
    """The unbiased MMD^2 on all images and every leave-one-out estimate (without each x, without
    each y), from the three kernel matrices in O(m^2 + n^2), no refitting."""
    m, n = kxx.shape[0], kyy.shape[0]
    off_x = kxx.sum(1) - np.diag(kxx)  # row sums without the diagonal
    off_y = kyy.sum(1) - np.diag(kyy)
    sxx, syy, sxy = off_x.sum(), off_y.sum(), kxy.sum()
    full = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)
    # without x_i: its row and column leave the xx sum, its row leaves the xy sum
    loo_x = (
        (sxx - 2 * off_x) / ((m - 1) * (m - 2)) + syy / (n * (n - 1)) - 2 * (sxy - kxy.sum(1)) / ((m - 1) * n)
    )
    loo_y = (
        sxx / (m * (m - 1)) + (syy - 2 * off_y) / ((n - 1) * (n - 2)) - 2 * (sxy - kxy.sum(0)) / (m * (n - 1))
    )
    return float(full), loo_x, loo_y


def _jackknife_se(*groups: np.ndarray) -> float:
    """Standard error from the leave-one-out estimates of each independent sample (a k-sample
    jackknife: the variance contributions of the samples add)."""
    return float(np.sqrt(sum((len(v) - 1) / len(v) * ((v - v.mean()) ** 2).sum() for v in groups)))


def _jackknife(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> tuple[float, float]:
    """The unbiased MMD^2 on all images and its two-sample jackknife standard error."""
    full, loo_x, loo_y = _leave_one_out(kxx, kyy, kxy)
    return full, _jackknife_se(loo_x, loo_y)


def _check(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise EvalError(f"KID needs two (N, d) feature arrays of the same d, got {a.shape} and {b.shape}")
    for x, name in ((a, names[0]), (b, names[1])):
        if len(x) < MIN_IMAGES:
            raise EvalError(f"{name} has {len(x)} images; a meaningful KID needs at least {MIN_IMAGES}")
    return a, b


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
    """KID of two feature sets. `subsets` caps the disjoint subsets used for sets larger than
    FULL_KERNEL_LIMIT (seeded assignment of images to subsets)."""
    a, b = _check(a, b, names)
    if subsets < 1:
        raise EvalError(f"KID subsets must be >= 1, got {subsets}")
    if subset_size < MIN_IMAGES:
        raise EvalError(f"KID subset size must be >= {MIN_IMAGES}, got {subset_size}")
    gamma = 1.0 / a.shape[1] if gamma is None else gamma

    def kernel(x, y):
        return (x @ y.T * gamma + coef) ** degree

    if max(len(a), len(b)) <= FULL_KERNEL_LIMIT:
        mean, se = _jackknife(kernel(a, a), kernel(b, b), kernel(a, b))
        return KidResult(mean, se, "jackknife", min(len(a), len(b)), 1, len(a), len(b))
    size = min(subset_size, len(a), len(b))
    count = min(subsets, len(a) // size, len(b) // size)
    rng = np.random.default_rng(seed)
    ia, ib = rng.permutation(len(a)), rng.permutation(len(b))
    values = []
    for k in range(count):
        xa, xb = a[ia[k * size : (k + 1) * size]], b[ib[k * size : (k + 1) * size]]
        values.append(_mmd2_from_kernels(kernel(xa, xa), kernel(xb, xb), kernel(xa, xb)))
    estimates = np.asarray(values)
    se = float(estimates.std(ddof=1) / np.sqrt(count)) if count > 1 else float("nan")
    return KidResult(float(estimates.mean()), se, "disjoint subsets", size, count, len(a), len(b))


COMPARISONS = (
    # key, synthetic class, real class, better when
    ("syn_AD_vs_real_AD", "AD", "AD", "lower"),
    ("syn_AD_vs_real_NON_AD", "AD", "NON_AD", "higher"),
    ("syn_NON_AD_vs_real_NON_AD", "NON_AD", "NON_AD", "lower"),
    ("syn_NON_AD_vs_real_AD", "NON_AD", "AD", "higher"),
)


@dataclass(frozen=True)
class MarginResult:
    """KID(syn, real of the other class) - KID(syn, real of its own class): positive when the
    synthetic class sits closer to its own real class. Its standard error treats the synthetic set
    as shared by both KIDs: their errors are correlated (the synthetic-synthetic kernel terms even
    cancel), so adding them as if independent can be off in either direction."""

    mean: float
    se: float
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


def kid_margin(
    syn: np.ndarray,
    real_other: np.ndarray,
    real_same: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    names: tuple[str, str, str] = ("synthetic", "real other", "real same"),
) -> MarginResult:
    """The cross-class margin with a three-sample jackknife error (every set up to
    FULL_KERNEL_LIMIT), or the mean and error of margins on disjoint subsets that share the
    synthetic subset (larger sets)."""
    syn, real_other = _check(syn, real_other, names[:2])
    _, real_same = _check(syn, real_same, (names[0], names[2]))
    gamma = 1.0 / syn.shape[1]

    def kernel(x, y):
        return (x @ y.T * gamma + 1.0) ** 3

    if max(len(syn), len(real_other), len(real_same)) <= FULL_KERNEL_LIMIT:
        kss = kernel(syn, syn)
        f_o, lo_s, lo_o = _leave_one_out(kss, kernel(real_other, real_other), kernel(syn, real_other))
        f_s, ls_s, ls_r = _leave_one_out(kss, kernel(real_same, real_same), kernel(syn, real_same))
        se = _jackknife_se(lo_s - ls_s, lo_o - f_s, f_o - ls_r)
        return MarginResult(f_o - f_s, se, "jackknife")
    size = min(subset_size, len(syn), len(real_other), len(real_same))
    count = min(subsets, len(syn) // size, len(real_other) // size, len(real_same) // size)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(len(x)) for x in (syn, real_other, real_same)]
    values = []
    for k in range(count):
        s, o, r = (
            x[p[k * size : (k + 1) * size]] for x, p in zip((syn, real_other, real_same), perms, strict=True)
        )
        kss = kernel(s, s)
        values.append(
            _mmd2_from_kernels(kss, kernel(o, o), kernel(s, o))
            - _mmd2_from_kernels(kss, kernel(r, r), kernel(s, r))
        )
    estimates = np.asarray(values)
    se = float(estimates.std(ddof=1) / np.sqrt(count)) if count > 1 else float("nan")
    return MarginResult(float(estimates.mean()), se, "disjoint subsets")


def class_margins(
    real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray], **kw
) -> dict[str, MarginResult]:
    """Per synthetic class, its margin (the clinical rule's quantity, with its own error)."""
    other = {"AD": "NON_AD", "NON_AD": "AD"}
    return {
        f"margin_{c}": kid_margin(
            synthetic[c],
            real[other[c]],
            real[c],
            names=(f"synthetic {c}", f"real {other[c]}", f"real {c}"),
            **kw,
        )
        for c in ("AD", "NON_AD")
    }


def four_comparisons(
    real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray], **kw
) -> dict[str, KidResult]:
    """The study's Table 2 for one checkpoint."""
    return {
        key: kid(synthetic[s], real[r], names=(f"synthetic {s}", f"real {r}"), **kw)
        for key, s, r, _ in COMPARISONS
    }
