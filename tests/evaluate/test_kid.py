import numpy as np
import pytest
import torch

from polypsynth.evaluate.errors import EvalError
from polypsynth.evaluate.kid import four_comparisons, kid


def _draw(seed, n=200, d=64, shift=0.0):
    return np.random.default_rng(seed).normal(shift, 1.0, (n, d))


def test_same_distribution_is_about_zero_shifted_is_clearly_positive():
    same = kid(_draw(1), _draw(2), subsets=50, subset_size=100)
    assert abs(same.mean) <= 3 * same.std + 1e-4
    shifted = kid(_draw(1), _draw(3, shift=0.5), subsets=50, subset_size=100)
    assert shifted.mean > 10 * max(same.std, abs(same.mean)) and shifted.mean > 5 * shifted.std


def test_equals_torchmetrics_on_the_same_features():
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _draw(4, n=60), _draw(5, n=60, shift=0.2)

    class Identity(torch.nn.Module):  # the "images" are already features
        def forward(self, x):
            return x

    # One subset holding every feature: no subset sampling, so both estimators see the same sets.
    metric = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=60, normalize=True)
    metric.update(torch.tensor(b, dtype=torch.float64), real=True)
    metric.update(torch.tensor(a, dtype=torch.float64), real=False)
    expected, _ = metric.compute()
    ours = kid(a, b, subsets=1, subset_size=60)
    assert ours.mean == pytest.approx(float(expected), abs=1e-6)


def test_reproducible_with_a_seed_and_subset_shrinks_with_a_warning():
    a, b = _draw(6, n=40), _draw(7, n=30)
    with pytest.warns(
        UserWarning, match=r"KID subset size 1000 exceeds the smaller set \(set a: 40, set b: 30\); using 30"
    ):
        r1 = kid(a, b, subsets=10, seed=3)
    r2 = kid(a, b, subsets=10, seed=3, subset_size=30)
    assert r1 == r2 and r1.subset_size == 30
    assert (
        kid(a, b, subsets=10, seed=4, subset_size=20).mean
        != kid(a, b, subsets=10, seed=3, subset_size=20).mean
    )


def test_too_few_images_names_the_set():
    with pytest.raises(EvalError, match="synthetic AD has 4 images; a meaningful KID needs at least 10"):
        four_comparisons(
            {"AD": _draw(1, 20), "NON_AD": _draw(2, 20)}, {"AD": _draw(3, 4), "NON_AD": _draw(4, 20)}
        )


def test_full_kernel_and_per_subset_paths_agree(monkeypatch):
    from polypsynth.evaluate import kid as kid_mod

    a, b = _draw(8, n=50), _draw(9, n=40, shift=0.3)
    fast = kid(a, b, subsets=20, subset_size=30, seed=5)
    monkeypatch.setattr(kid_mod, "FULL_KERNEL_LIMIT", 0)
    slow = kid(a, b, subsets=20, subset_size=30, seed=5)
    assert fast.mean == pytest.approx(slow.mean, rel=1e-9) and fast.std == pytest.approx(slow.std, rel=1e-9)
