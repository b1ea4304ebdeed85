import numpy as np
import pytest
import torch

from polypsynth.errors import EvalError
from polypsynth.evaluate import kid as kid_mod
from polypsynth.evaluate.kid import (
    BLOCK_SIZE,
    COMPARISONS,
    ContrastResult,
    KidResult,
    _mmd2_from_kernels,
    kid_table,
)


def kid(a, b, block_size=BLOCK_SIZE, seed=0, names=("set a", "set b")) -> KidResult:
    """One KID through the estimator behind kid_table (its one-pair case)."""
    kids, _ = kid_mod._table({names[0]: a}, {names[1]: b}, [names], {}, block_size, seed=seed, kernel_kw={})
    return kids[names]


def kid_margin(syn, other, same, block_size=BLOCK_SIZE, seed=0) -> ContrastResult:
    """One cross-class margin through the estimator behind kid_table."""
    terms = [(1.0, "synthetic", "real other"), (-1.0, "synthetic", "real same")]
    _, margins = kid_mod._table(
        {"synthetic": syn},
        {"real other": other, "real same": same},
        [],
        {"m": terms},
        block_size,
        seed=seed,
        kernel_kw={},
    )
    return margins["m"]


def _draw(seed, n=200, d=64, shift=0.0):
    return np.random.default_rng(seed).normal(shift, 1.0, (n, d))


def test_same_distribution_is_about_zero_shifted_is_clearly_positive():
    same = kid(_draw(1), _draw(2))
    assert same.method == "jackknife" and same.blocks == 1 and same.se > 0
    assert abs(same.mean) <= 3 * same.se
    shifted = kid(_draw(1), _draw(3, shift=0.5))
    assert shifted.mean > 10 * same.se and shifted.mean > 5 * shifted.se


def test_equals_torchmetrics_on_the_same_features():
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _draw(4, n=60), _draw(5, n=60, shift=0.2)

    class Identity(torch.nn.Module):  # the "images" are already features
        def forward(self, x):
            return x

    # One subset holding every feature: torchmetrics then computes the all-images estimate too.
    metric = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=60, normalize=True)
    metric.update(torch.tensor(b, dtype=torch.float64), real=True)
    metric.update(torch.tensor(a, dtype=torch.float64), real=False)
    expected, _ = metric.compute()
    assert kid(a, b).mean == pytest.approx(float(expected), abs=1e-6)


def test_jackknife_leave_one_out_values_equal_brute_force():
    """The closed-form leave-one-out estimates equal recomputing the estimate without each image."""
    a, b = _draw(10, n=14, d=8), _draw(11, n=12, d=8, shift=0.3)

    def kernel(x, y):
        return (x @ y.T / 8 + 1) ** 3

    def mmd(x, y):
        return _mmd2_from_kernels(kernel(x, x), kernel(y, y), kernel(x, y))

    loo_x = np.array([mmd(np.delete(a, i, 0), b) for i in range(len(a))])
    loo_y = np.array([mmd(a, np.delete(b, j, 0)) for j in range(len(b))])
    var = 13 / 14 * ((loo_x - loo_x.mean()) ** 2).sum() + 11 / 12 * ((loo_y - loo_y.mean()) ** 2).sum()
    mean, se = kid_mod._jackknife(kernel(a, a), kernel(b, b), kernel(a, b))
    assert mean == pytest.approx(mmd(a, b), rel=1e-12) and se == pytest.approx(np.sqrt(var), rel=1e-9)


@pytest.mark.parametrize("block_size", [4096, 20])
def test_standard_error_matches_fresh_draws(block_size):
    """Independent reference: the spread of the estimate over freshly drawn sets from the same two
    distributions, for one block of every image and for four disjoint blocks of 20. (The old "std
    over overlapping subsets" was 0 for sets of the subset size.)"""
    rng = np.random.default_rng(0)

    def pair():
        return rng.normal(0, 1, (80, 16)), rng.normal(0.25, 1, (80, 16))

    fresh = [kid(*pair(), block_size=block_size).mean for _ in range(300)]
    ses = [kid(*pair(), block_size=block_size, seed=s).se for s in range(60)]
    assert kid(*pair(), block_size=block_size).method == (
        "jackknife" if block_size > 80 else "jackknife over 4 disjoint blocks"
    )
    assert np.mean(ses) == pytest.approx(np.std(fresh), rel=0.25)


def test_blocks_are_disjoint_shuffles_and_their_errors_combine():
    """Sets over the block size: the fewest blocks of at most that size (95 images, blocks of 30:
    4), block k of one set against block k of the other, each image once; the mean of the block
    estimates, the root sum of their squared errors over the count. Seeded."""
    a, b = _draw(6, n=95), _draw(7, n=64)
    r = kid(a, b, block_size=30, seed=3)
    assert (r.method, r.blocks, r.block_size, r.n_a, r.n_b) == (
        "jackknife over 4 disjoint blocks",
        4,
        16,
        95,
        64,
    )
    rng = np.random.default_rng(3)
    parts_a = np.array_split(a[rng.permutation(95)], 4)
    parts_b = np.array_split(b[rng.permutation(64)], 4)
    assert sum(len(p) for p in parts_a) == 95 and max(len(p) for p in parts_a) <= 30
    singles = [kid(x, y) for x, y in zip(parts_a, parts_b, strict=True)]
    assert all(s.blocks == 1 for s in singles)
    assert r.mean == pytest.approx(np.mean([s.mean for s in singles]), rel=1e-12)
    assert r.se == pytest.approx(np.sqrt(sum(s.se**2 for s in singles)) / 4, rel=1e-12)
    assert r == kid(a, b, block_size=30, seed=3) and r != kid(a, b, block_size=30, seed=4)
    # never a block below 10 images: 25 images allow 2 blocks however small the block size
    assert kid(_draw(8, n=25), _draw(9, n=400), block_size=10).blocks == 2


def test_float32_features_give_the_float64_estimate():
    """Float32 products with float64 sums (the fast path for extractor features) agree with the
    float64 computation far inside the standard error, in Inception-like non-negative features."""
    rng = np.random.default_rng(12)
    a = np.abs(rng.normal(0.3, 0.4, (600, 2048)))
    b = np.abs(rng.normal(0.31, 0.4, (500, 2048)))
    exact, fast = kid(a, b), kid(a.astype(np.float32), b.astype(np.float32))
    assert abs(fast.mean - exact.mean) < 1e-3 * exact.se and fast.se == pytest.approx(exact.se, rel=1e-3)
    # mixed precisions fall back to float64 for every product
    assert kid(a.astype(np.float32), b).mean == pytest.approx(
        kid(a.astype(np.float32).astype(np.float64), b).mean, rel=1e-12
    )


def test_table_equals_the_single_comparisons():
    """kid_table shares kernel sums across its comparisons; each value equals the KID or margin
    computed alone."""
    real = {"AD": _draw(30, n=40, d=16), "NON_AD": _draw(31, n=30, d=16, shift=0.4)}
    syn = {"AD": _draw(32, n=35, d=16, shift=0.1), "NON_AD": _draw(33, n=25, d=16, shift=0.3)}
    table = kid_table(real, syn)
    for key, s, r in (("syn_AD_vs_real_NON_AD", "AD", "NON_AD"), ("syn_NON_AD_vs_real_AD", "NON_AD", "AD")):
        alone = kid(syn[s], real[r])
        assert (table[key].mean, table[key].se) == pytest.approx((alone.mean, alone.se), rel=1e-12)
    m = kid_margin(syn["NON_AD"], real["AD"], real["NON_AD"])
    assert (table["margin_NON_AD"].mean, table["margin_NON_AD"].se) == pytest.approx(
        (m.mean, m.se), rel=1e-12
    )
    assert set(table) == {key for key, *_ in COMPARISONS} | {"margin_AD", "margin_NON_AD", "shift_free"}
    assert table["shift_free"].mean == pytest.approx(table["margin_AD"].mean + table["margin_NON_AD"].mean)


def test_shift_free_contrast_and_real_scale_against_brute_force():
    """m_AD + m_NON_AD's jackknife error equals the brute-force leave-one-out over all four image
    sets; KID(real AD, real NON_AD) equals the one-pair KID of the two real sets."""
    real = {"AD": _draw(40, n=13, d=5), "NON_AD": _draw(41, n=12, d=5, shift=0.7)}
    syn = {"AD": _draw(42, n=11, d=5, shift=0.2), "NON_AD": _draw(43, n=13, d=5, shift=0.5)}

    def contrast(r_ad, r_non, s_ad, s_non):
        return kid(s_ad, r_non).mean - kid(s_ad, r_ad).mean + kid(s_non, r_ad).mean - kid(s_non, r_non).mean

    args = [real["AD"], real["NON_AD"], syn["AD"], syn["NON_AD"]]
    groups = []
    for j, x in enumerate(args):
        groups.append(
            [
                contrast(*[np.delete(x, i, 0) if k == j else a for k, a in enumerate(args)])
                for i in range(len(x))
            ]
        )
    var = sum((len(g) - 1) / len(g) * ((np.asarray(g) - np.mean(g)) ** 2).sum() for g in groups)
    got = kid_table(real, syn)["shift_free"]
    assert got.mean == pytest.approx(contrast(*args), rel=1e-12)
    assert got.se == pytest.approx(np.sqrt(var), rel=1e-9)
    scale = kid_mod.real_scale(real)
    alone = kid(real["AD"], real["NON_AD"])
    assert (scale.mean, scale.se, scale.n_a, scale.n_b) == pytest.approx(
        (alone.mean, alone.se, 13, 12), rel=1e-12
    )


def test_bad_input_names_the_set_or_the_option():
    with pytest.raises(EvalError, match="synthetic AD has 4 images; a meaningful KID needs at least 10"):
        kid_table({"AD": _draw(1, 20), "NON_AD": _draw(2, 20)}, {"AD": _draw(3, 4), "NON_AD": _draw(4, 20)})
    with pytest.raises(EvalError, match="KID block size must be >= 10, got 5"):
        kid(_draw(1, 20), _draw(2, 20), block_size=5)
    with pytest.raises(EvalError, match=r"same d, got set a \(20, 64\), set b \(20, 8\)"):
        kid(_draw(1, 20), _draw(2, 20, d=8))


def test_margin_jackknife_equals_brute_force_leave_one_out():
    s, o, r = _draw(20, n=13, d=6, shift=0.2), _draw(21, n=12, d=6, shift=0.8), _draw(22, n=11, d=6)

    def margin(s, o, r):
        return kid(s, o).mean - kid(s, r).mean

    groups = [
        [margin(np.delete(s, i, 0), o, r) for i in range(len(s))],
        [margin(s, np.delete(o, i, 0), r) for i in range(len(o))],
        [margin(s, o, np.delete(r, i, 0)) for i in range(len(r))],
    ]
    var = sum((len(g) - 1) / len(g) * ((np.asarray(g) - np.mean(g)) ** 2).sum() for g in groups)
    got = kid_margin(s, o, r)
    assert got.method == "jackknife"
    assert got.mean == pytest.approx(margin(s, o, r), rel=1e-12) and got.se == pytest.approx(
        np.sqrt(var), rel=1e-9
    )


@pytest.mark.parametrize("block_size", [4096, 20])
def test_margin_error_matches_fresh_draws(block_size):
    rng = np.random.default_rng(1)

    def sets():  # synthetic between the two real classes, nearer its own
        return rng.normal(0.2, 1, (80, 16)), rng.normal(0.6, 1, (80, 16)), rng.normal(0, 1, (80, 16))

    fresh = [kid_margin(*sets(), block_size=block_size).mean for _ in range(300)]
    joint = []
    for seed in range(60):
        m = kid_margin(*sets(), block_size=block_size, seed=seed)
        assert m.method == ("jackknife" if block_size > 80 else "jackknife over 4 disjoint blocks")
        joint.append(m.se)
    assert np.mean(joint) == pytest.approx(np.std(fresh), rel=0.25)
