import numpy as np
import pytest
import torch

from polypsynth.errors import EvalError
from polypsynth.evaluate.kid import _mmd2_from_kernels, four_comparisons, kid


def _draw(seed, n=200, d=64, shift=0.0):
    return np.random.default_rng(seed).normal(shift, 1.0, (n, d))


def test_same_distribution_is_about_zero_shifted_is_clearly_positive():
    same = kid(_draw(1), _draw(2))
    assert same.method == "jackknife" and same.subsets == 1 and same.se > 0
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
    from polypsynth.evaluate import kid as kid_mod

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


@pytest.mark.parametrize("path", ["jackknife", "disjoint subsets"])
def test_standard_error_matches_fresh_draws(path, monkeypatch):
    """Independent reference: the spread of the estimate over freshly drawn sets from the same two
    distributions. The old "std over overlapping subsets" was 0 for sets of the subset size."""
    from polypsynth.evaluate import kid as kid_mod

    if path == "disjoint subsets":
        monkeypatch.setattr(kid_mod, "FULL_KERNEL_LIMIT", 0)
    rng = np.random.default_rng(0)

    def pair():
        return rng.normal(0, 1, (80, 16)), rng.normal(0.25, 1, (80, 16))

    fresh = [kid(*pair(), subset_size=20).mean for _ in range(300)]
    ses = [kid(*pair(), subset_size=20, seed=s).se for s in range(60)]
    assert kid(*pair(), subset_size=20).method == path
    assert np.mean(ses) == pytest.approx(np.std(fresh), rel=0.25)


def test_disjoint_subsets_use_each_image_once(monkeypatch):
    from polypsynth.evaluate import kid as kid_mod

    monkeypatch.setattr(kid_mod, "FULL_KERNEL_LIMIT", 0)
    a, b = _draw(6, n=95), _draw(7, n=64)
    r = kid(a, b, subsets=100, subset_size=30, seed=3)
    assert (r.method, r.subsets, r.subset_size) == ("disjoint subsets", 2, 30)  # 64 // 30 = 2
    assert r == kid(a, b, subsets=100, subset_size=30, seed=3)  # seeded
    assert kid(a, b, subsets=1, subset_size=30, seed=3).subsets == 1


def test_bad_input_names_the_set_or_the_option():
    with pytest.raises(EvalError, match="synthetic AD has 4 images; a meaningful KID needs at least 10"):
        four_comparisons(
            {"AD": _draw(1, 20), "NON_AD": _draw(2, 20)}, {"AD": _draw(3, 4), "NON_AD": _draw(4, 20)}
        )
    with pytest.raises(EvalError, match="KID subset size must be >= 10, got 5"):
        kid(_draw(1, 20), _draw(2, 20), subset_size=5)


def test_margin_jackknife_equals_brute_force_leave_one_out():
    from polypsynth.evaluate.kid import kid_margin

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


@pytest.mark.parametrize("path", ["jackknife", "disjoint subsets"])
def test_margin_error_matches_fresh_draws(path, monkeypatch):
    from polypsynth.evaluate import kid as kid_mod

    if path == "disjoint subsets":
        monkeypatch.setattr(kid_mod, "FULL_KERNEL_LIMIT", 0)
    rng = np.random.default_rng(1)

    def sets():  # synthetic between the two real classes, nearer its own
        return rng.normal(0.2, 1, (80, 16)), rng.normal(0.6, 1, (80, 16)), rng.normal(0, 1, (80, 16))

    fresh = [kid_mod.kid_margin(*sets(), subset_size=20).mean for _ in range(300)]
    joint = []
    for seed in range(60):
        m = kid_mod.kid_margin(*sets(), subset_size=20, seed=seed)
        assert m.method == path
        joint.append(m.se)
    assert np.mean(joint) == pytest.approx(np.std(fresh), rel=0.25)
