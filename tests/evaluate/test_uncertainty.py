"""Table 1's intervals cover: simulated experiments with a known truth (the population of test
images and of seeds), in a seed-dominated and an image-dominated regime, with 3 and 10 seeds."""

import numpy as np
import pytest
from scipy.special import expit

from polypsynth.errors import EvalError
from polypsynth.evaluate import uncertainty
from polypsynth.evaluate.classify import classification_metrics

SIZES = (77, 36)  # the study's test split: AD, NON_AD
MEANS = (1.2, 0.2)  # per-class mean logit of "judged right"


def _truth(image_sd, seed_sd, shift=0.0, draws=2_000_000):
    rng = np.random.default_rng(123)
    recalls = [
        expit(rng.normal(mu, image_sd, draws) + shift + rng.normal(0, seed_sd, draws)).mean() for mu in MEANS
    ]
    return float(np.mean(recalls))


def _experiment(rng, seeds, image_sd, seed_sd, sizes=SIZES, gain=0.0):
    """One test split drawn from the population, `seeds` classifiers (and as many augmented ones,
    paired by seed) judged on it: (y_true, correct_real (seeds, images), correct_aug)."""
    y = np.repeat([0, 1], sizes)
    logit = np.concatenate([rng.normal(mu, image_sd, n) for mu, n in zip(MEANS, sizes, strict=True)])
    real = rng.random((seeds, len(y))) < expit(logit + rng.normal(0, seed_sd, (seeds, 1)))
    aug = rng.random((seeds, len(y))) < expit(logit + gain + rng.normal(0, seed_sd, (seeds, 1)))
    return y, real.astype(float), aug.astype(float)


@pytest.mark.parametrize("seeds", [3, 10])
@pytest.mark.parametrize(
    "regime, image_sd, seed_sd, sizes",
    [("seed-dominated", 1.0, 0.6, SIZES), ("image-dominated", 2.0, 0.0, (30, 15))],
)
def test_accuracy_and_gain_intervals_cover(seeds, regime, image_sd, seed_sd, sizes):
    rng = np.random.default_rng(seeds)
    truth = _truth(image_sd, seed_sd)
    truth_gain = _truth(image_sd, seed_sd, shift=0.4) - truth
    hits, gain_hits, seed_bas = [], [], []
    for _ in range(1000):
        y, real, aug = _experiment(rng, seeds, image_sd, seed_sd, sizes, gain=0.4)
        acc = uncertainty.interval(y, real)
        hits.append(acc["ci95"][0] <= truth <= acc["ci95"][1])
        g = uncertainty.interval(y, aug - real)
        gain_hits.append(g["ci95"][0] <= truth_gain <= g["ci95"][1])
        seed_bas.append(acc["std"])
    if regime == "seed-dominated":  # the regime is what it says: seeds' BA spread about 0.10
        assert 0.08 < np.median(seed_bas) < 0.12
    assert np.mean(hits) >= 0.93, f"accuracy coverage {np.mean(hits):.3f}"
    assert np.mean(gain_hits) >= 0.93, f"gain coverage {np.mean(gain_hits):.3f}"
    assert np.mean(hits) <= 0.98  # and not far too wide (noise counted once)


def test_the_interval_equals_an_independent_computation():
    """By hand: the balanced accuracy per seed from scikit-learn, the image part as the variance
    of each class's mean of seed-averaged scores less the interaction, each part with its t."""
    from scipy.stats import t

    rng = np.random.default_rng(4)
    y, real, _ = _experiment(rng, 4, 1.0, 0.4, sizes=(20, 12))
    out = uncertainty.interval(y, real)
    bas = [
        classification_metrics(y, np.where(r == 1, y, 1 - y))["balanced_accuracy"] for r in real
    ]  # a wrong answer names the other class
    assert out["mean"] == pytest.approx(np.mean(bas)) and out["std"] == pytest.approx(np.std(bas, ddof=1))
    image = 0.0
    for c, n in enumerate((20, 12)):
        xc = real[:, y == c]
        resid = xc - xc.mean(0) - xc.mean(1)[:, None] + xc.mean()
        ms_res = (resid**2).sum() / (3 * (n - 1))
        image += max(0.0, xc.mean(0).var(ddof=1) - ms_res / 4) / n / 4
    seed = np.var(bas, ddof=1) / 4
    half = np.hypot(t.ppf(0.975, 30) * np.sqrt(image), t.ppf(0.975, 3) * np.sqrt(seed))
    assert out["ci95"] == pytest.approx([np.mean(bas) - half, np.mean(bas) + half])
    assert out["se"] == pytest.approx(np.sqrt(image + seed))
    assert t.ppf(0.975, out["df"]) * out["se"] == pytest.approx(half)  # the effective df


def test_one_seed_covers_the_images_only():
    y = np.repeat([0, 1], (40, 20))
    one = uncertainty.interval(y, np.r_[np.ones(30), np.zeros(10), np.ones(10), np.zeros(10)][None])
    assert one["seed_part"] is None and one["std"] is None and one["seeds"] == 1
    # binomial variance of each recall: 0.75 * 0.25 / 40 and 0.5 * 0.5 / 20 (with n - 1), halved twice
    image = (0.75 * 0.25 * 40 / 39 / 40 + 0.5 * 0.5 * 20 / 19 / 20) / 4
    assert one["se"] == pytest.approx(np.sqrt(image))


@pytest.mark.parametrize(
    "ci95, expected",
    [([0.01, 0.09], "helps"), ([-0.03, 0.015], "does not help"), ([-0.03, 0.05], "cannot tell")],
)
def test_three_words_against_the_margin(ci95, expected):
    gain = uncertainty.conclude({"mean": sum(ci95) / 2, "se": 0.02, "df": float("inf"), "ci95": ci95}, 0.02)
    assert gain["word"] == expected
    assert gain["mde"] == pytest.approx((1.959964 + 0.841621) * 0.02, rel=1e-5)  # 2.80 SE
    assert expected in uncertainty.describe(gain)


@pytest.mark.parametrize("margin", [0, 1, -0.1, 1.5])
def test_margin_outside_the_unit_interval_is_refused(margin):
    with pytest.raises(
        EvalError, match=rf"--margin must be in \(0, 1\) \(a balanced-accuracy gain\), got {margin}"
    ):
        uncertainty.conclude({"mean": 0.0, "se": 0.01, "df": 5.0, "ci95": [-0.02, 0.02]}, margin)
