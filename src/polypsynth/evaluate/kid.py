"""Kernel Inception Distance: unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / d + 1)^3
(Binkowski et al. 2018), with a standard error whose resampling unit is the image. Works on any
feature space.

Every estimate is the U-statistic over every pair of images of a block, with its standard error by
the jackknife (delete one image of any set; Arvesen 1969), in closed form from kernel row sums:

- Sets of up to `block_size` images (default BLOCK_SIZE) form one block: the estimate over every
  image of both sets, no subset sampling (whose spread is 0 when both sets equal the subset size).
- Larger sets are split into the fewest disjoint blocks of at most `block_size` images (a seeded
  shuffle; block k of one set meets block k of the others). The estimate is the mean over blocks,
  its error the blocks' jackknife errors combined (the blocks share no image, so they are
  independent): an error with many degrees of freedom, where a spread of a few block estimates
  would have few. Each image is used once, and every pair within a block.

Float32 features (what the extractors give) are multiplied in float32, the BLAS cost, and summed in
float64; float64 features stay float64 throughout. `kid_table` computes the study's four
comparisons and the two class margins of one checkpoint from one set of kernel sums: each set's
own kernel once per block, each cross kernel once. Beside them it gives the scale the margins are
read on: the shift-free contrast m_AD + m_NON_AD (how much better each synthetic class matches its
own real class than the other synthetic class does: positive while the synthetic classes stay
distinct, even when both have drifted towards one real class, which turns one margin negative) and,
once per feature space, KID(real AD, real NON_AD), how far apart the real classes themselves are
(`real_scale`). Every margin and contrast is a linear combination of KIDs with its own jackknife
error: the leave-one-out estimates of each image set are combined before their spread is taken,
so the sets two KIDs share are counted once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.errors import EvalError

MIN_IMAGES = 10  # below this an unbiased MMD estimate says nothing useful
BLOCK_SIZE = 4096  # images per set in one block: up to this many, one estimate over all images


@dataclass(frozen=True)
class KidResult:
    mean: float
    se: float  # standard error of `mean` over images (jackknife, combined over blocks)
    method: str  # "jackknife" (one block) or "jackknife over k disjoint blocks"
    block_size: int  # images of the smaller set per block (all of it for one block)
    blocks: int  # disjoint blocks averaged
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ContrastResult:
    """A linear combination of KIDs measured jointly, e.g. a margin KID(syn, real of the other
    class) - KID(syn, real of its own class), positive when the synthetic class sits closer to its
    own real class. Its standard error treats the image sets the KIDs share as shared: their errors
    are correlated (the synthetic-synthetic kernel terms even cancel), so adding them as if
    independent can be off in either direction."""

    mean: float
    se: float
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


KidTable = dict[str, KidResult | ContrastResult]  # kid_table of one set: comparisons, margins, contrast


class Comparison(NamedTuple):
    """One KID comparison of Table 2: its key in results.json, the classes compared, and which
    way is better; its title (tables, plots) follows from them."""

    key: str
    synthetic: str  # class of the synthetic images
    real: str  # class of the real images
    better: Literal["lower", "higher"]

    @property
    def title(self) -> str:
        return f"Synthetic {self.synthetic} vs Real {self.real} {'↓' if self.better == 'lower' else '↑'}"


# The study's four, in its order; each table, plot and published-table reader follows this tuple.
COMPARISONS = (
    Comparison("syn_AD_vs_real_AD", "AD", "AD", "lower"),
    Comparison("syn_AD_vs_real_NON_AD", "AD", "NON_AD", "higher"),
    Comparison("syn_NON_AD_vs_real_NON_AD", "NON_AD", "NON_AD", "lower"),
    Comparison("syn_NON_AD_vs_real_AD", "NON_AD", "AD", "higher"),
)


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = kxx.shape[0], kyy.shape[0]
    sum_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    sum_yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2 * kxy.mean())


class _Kernel:
    """k(x, y) = (x.y * gamma + coef)^degree as row and column sums (float64), never kept."""

    def __init__(self, d: int, degree: int = 3, gamma: float | None = None, coef: float = 1.0):
        self.gamma, self.coef, self.degree = 1.0 / d if gamma is None else gamma, coef, degree

    def _matrix(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        k = x @ y.T  # x @ x.T runs as a symmetric product (BLAS syrk) when y is x
        k *= k.dtype.type(self.gamma)
        k += k.dtype.type(self.coef)
        return k**self.degree

    def self_sums(self, x: np.ndarray) -> np.ndarray:
        """Row sums of k(x, x) without the diagonal."""
        k = self._matrix(x, x)
        return k.sum(1, dtype=np.float64) - np.diagonal(k).astype(np.float64)

    def cross_sums(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column sums of k(x, y)."""
        k = self._matrix(x, y)
        return k.sum(1, dtype=np.float64), k.sum(0, dtype=np.float64)


def _leave_one_out(off_x: np.ndarray, off_y: np.ndarray, rows_xy: np.ndarray, cols_xy: np.ndarray):
    """The unbiased MMD^2 on all images and every leave-one-out estimate (without each x, without
    each y), from kernel row sums (`off_*`: own-set sums without the diagonal; `rows_xy`,
    `cols_xy`: the cross kernel's row and column sums), no refitting."""
    m, n = len(off_x), len(off_y)
    sxx, syy, sxy = off_x.sum(), off_y.sum(), rows_xy.sum()
    full = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)
    # without x_i: its row and column leave the xx sum, its row leaves the xy sum
    loo_x = (
        (sxx - 2 * off_x) / ((m - 1) * (m - 2)) + syy / (n * (n - 1)) - 2 * (sxy - rows_xy) / ((m - 1) * n)
    )
    loo_y = (
        sxx / (m * (m - 1)) + (syy - 2 * off_y) / ((n - 1) * (n - 2)) - 2 * (sxy - cols_xy) / (m * (n - 1))
    )
    return float(full), loo_x, loo_y


def _jackknife_se(*groups: np.ndarray) -> float:
    """Standard error from the leave-one-out estimates of each independent sample (a k-sample
    jackknife: the variance contributions of the samples add)."""
    return float(np.sqrt(sum((len(v) - 1) / len(v) * ((v - v.mean()) ** 2).sum() for v in groups)))


def _jackknife(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> tuple[float, float]:
    """The unbiased MMD^2 of three kernel matrices and its two-sample jackknife standard error."""
    off_x, off_y = kxx.sum(1) - np.diag(kxx), kyy.sum(1) - np.diag(kyy)
    full, loo_x, loo_y = _leave_one_out(off_x, off_y, kxy.sum(1), kxy.sum(0))
    return full, _jackknife_se(loo_x, loo_y)


def _check(sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out, dims = {}, set()
    for name, x in sets.items():
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float64)
        if x.ndim != 2:
            raise EvalError(f"KID needs (N, d) feature arrays; {name} has shape {x.shape}")
        if len(x) < MIN_IMAGES:
            raise EvalError(f"{name} has {len(x)} images; a meaningful KID needs at least {MIN_IMAGES}")
        out[name] = x
        dims.add(x.shape[1])
    if len(dims) > 1:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in out.items())
        raise EvalError(f"KID needs feature arrays of the same d, got {shapes}")
    if len({x.dtype for x in out.values()}) > 1:  # one precision for every product
        out = {k: v.astype(np.float64) for k, v in out.items()}
    return out


def _blocks(sets: dict[str, np.ndarray], block_size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """The sets split into the fewest disjoint blocks of at most `block_size` images (none below
    MIN_IMAGES), one seeded shuffle per set; a single block keeps the sets as they are."""
    if block_size < MIN_IMAGES:
        raise EvalError(f"KID block size must be >= {MIN_IMAGES}, got {block_size}")
    sizes = [len(x) for x in sets.values()]
    count = max(1, min(math.ceil(max(sizes) / block_size), min(sizes) // MIN_IMAGES))
    if count == 1:
        return [sets]
    rng = np.random.default_rng(seed)
    parts = {k: np.array_split(x[rng.permutation(len(x))], count) for k, x in sets.items()}
    return [{k: p[i] for k, p in parts.items()} for i in range(count)]


def _combine(values: list[tuple[float, float]]) -> tuple[float, float, str]:
    """Mean of independent block estimates and its standard error."""
    means, ses = np.array([v[0] for v in values]), np.array([v[1] for v in values])
    k = len(values)
    method = "jackknife" if k == 1 else f"jackknife over {k} disjoint blocks"
    return float(means.mean()), float(np.sqrt((ses**2).sum()) / k), method


Terms = list[tuple[float, str, str]]  # a contrast: coefficient, synthetic set, real set of each KID


def _contrast(terms: Terms, loo: dict) -> tuple[float, float]:
    """One block's contrast sum_j c_j KID(s_j, r_j) and its jackknife error: each image set's
    leave-one-out estimates of the whole contrast (`loo[s, r]`: the full KID, leaving out each
    image of s, each of r), the spread of each set's counted once."""
    full = sum(c * loo[s, r][0] for c, s, r in terms)
    sets = list(dict.fromkeys(name for _, s, r in terms for name in (s, r)))
    groups = []
    for name in sets:
        groups.append(
            sum(
                c * (loo[s, r][1] if name == s else loo[s, r][2] if name == r else loo[s, r][0])
                for c, s, r in terms
            )
        )
    return float(full), _jackknife_se(*[np.asarray(g, np.float64) for g in groups])


def _table(
    syn: dict[str, np.ndarray],
    real: dict[str, np.ndarray],
    pairs: list[tuple[str, str]],
    contrasts: dict[object, Terms],
    block_size: int,
    *,
    seed: int,
    kernel_kw: dict,
) -> tuple[dict, dict]:
    """KIDs of (synthetic, real) name pairs and contrasts of such KIDs (`contrasts`: key -> terms),
    all from one partition into blocks and one set of kernel sums per block."""
    if set(syn) & set(real):
        raise ValueError(f"synthetic and real sets need distinct names, got {sorted(set(syn) & set(real))}")
    sets = _check({**syn, **real})
    kernel = _Kernel(next(iter(sets.values())).shape[1], **kernel_kw)
    per_pair: dict[tuple[str, str], list] = {p: [] for p in pairs}
    per_contrast: dict[object, list] = {key: [] for key in contrasts}
    blocks = _blocks(sets, block_size, seed)
    needed = {*pairs, *[(s, r) for terms in contrasts.values() for _, s, r in terms]}
    for block in blocks:
        off = {k: kernel.self_sums(x) for k, x in block.items()}
        loo = {}
        for s, r in needed:
            rows, cols = kernel.cross_sums(block[s], block[r])
            loo[s, r] = _leave_one_out(off[s], off[r], rows, cols)
        for p in pairs:
            full, lx, ly = loo[p]
            per_pair[p].append((full, _jackknife_se(lx, ly)))
        for key, terms in contrasts.items():
            per_contrast[key].append(_contrast(terms, loo))
    kids = {}
    for (s, r), values in per_pair.items():
        mean, se, method = _combine(values)
        size = min(len(blocks[-1][s]), len(blocks[-1][r]))  # array_split: the last blocks are the smallest
        kids[s, r] = KidResult(mean, se, method, size, len(blocks), len(sets[s]), len(sets[r]))
    return kids, {key: ContrastResult(*_combine(v)) for key, v in per_contrast.items()}


OTHER = {"AD": "NON_AD", "NON_AD": "AD"}


def kid_table(
    real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray], block_size: int = BLOCK_SIZE, seed: int = 0
) -> KidTable:
    """One checkpoint's Table 2 (the study's four comparisons, keys of COMPARISONS), the clinical
    rule's two margins (`margin_AD`, `margin_NON_AD`) and their sum (`shift_free`), each with its
    own error."""
    syn = {f"synthetic {c}": synthetic[c] for c in CLASSES}
    ref = {f"real {c}": real[c] for c in CLASSES}
    pairs = [(f"synthetic {s}", f"real {r}") for _, s, r, _ in COMPARISONS]
    margins: dict[object, Terms] = {
        f"margin_{c}": [(1.0, f"synthetic {c}", f"real {OTHER[c]}"), (-1.0, f"synthetic {c}", f"real {c}")]
        for c in CLASSES
    }
    margins["shift_free"] = [term for c in CLASSES for term in margins[f"margin_{c}"]]
    kids, contrasts = _table(syn, ref, pairs, margins, block_size, seed=seed, kernel_kw={})
    out: KidTable = {key: kids[p] for (key, *_), p in zip(COMPARISONS, pairs, strict=True)}
    out.update(contrasts)
    return out


def real_scale(real: dict[str, np.ndarray], block_size: int = BLOCK_SIZE, seed: int = 0) -> KidResult:
    """KID(real AD, real NON_AD): how far apart the real classes are, the scale a margin is read on."""
    a, b = (f"real {c}" for c in CLASSES)
    kids, _ = _table(
        {a: real[CLASSES[0]]}, {b: real[CLASSES[1]]}, [(a, b)], {}, block_size, seed=seed, kernel_kw={}
    )
    return kids[a, b]


def cross_fitted(tables: list[KidTable]) -> KidTable:
    """The positive control's table from its folds' (each fold against the rest of the real train
    split): the mean of each estimate, with the folds' mean standard error, the error of that mean
    if the folds' errors were fully correlated (they share images: fold f's reference holds the
    other folds), so it is not understated."""
    out: KidTable = {}
    k = len(tables)
    method = f"cross-fitted: each of {k} folds against the rest; error as if fully correlated"
    for key, first in tables[0].items():
        mean = float(np.mean([t[key].mean for t in tables]))
        se = float(np.mean([t[key].se for t in tables]))
        if isinstance(first, KidResult):
            parts = [t[key] for t in tables if isinstance(t[key], KidResult)]
            out[key] = KidResult(
                mean,
                se,
                method,
                min(p.block_size for p in parts if isinstance(p, KidResult)),
                sum(p.blocks for p in parts if isinstance(p, KidResult)),
                sum(p.n_a for p in parts if isinstance(p, KidResult)),
                min(p.n_b for p in parts if isinstance(p, KidResult)),
            )
        else:
            out[key] = ContrastResult(mean, se, method)
    return out
