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


def _seed_sd(image_sd, seed_sd, sizes=SIZES, splits=20, seeds=200):
    """The true seed-to-seed standard deviation of one classifier's balanced accuracy on a test
    split of `sizes` (what a user would declare with --seed-sd), averaged over splits."""
    rng = np.random.default_rng(99)
    sds = []
    for _ in range(splits):
        y, real, _ = _experiment(rng, seeds, image_sd, seed_sd, sizes)
        sds.append(np.std(real @ (1.0 / (2 * np.bincount(y)[y])), ddof=1))
    return float(np.mean(sds))


@pytest.mark.parametrize("seeds", [1, 2, 3, 10])
@pytest.mark.parametrize(
    "regime, image_sd, seed_sd, sizes",
    [("seed-dominated", 1.0, 0.6, SIZES), ("image-dominated", 2.0, 0.0, (30, 15))],
)
def test_accuracy_and_gain_intervals_cover(seeds, regime, image_sd, seed_sd, sizes):
    """At the study's test split, with 1 seed (the seed SD declared, as --seed-sd), 2, 3 and 10."""
    rng = np.random.default_rng(seeds)
    truth = _truth(image_sd, seed_sd)
    truth_gain = _truth(image_sd, seed_sd, shift=0.4) - truth
    declared = _seed_sd(image_sd, seed_sd, sizes) if seeds == 1 else None
    hits, gain_hits, seed_bas = [], [], []
    for _ in range(1000):
        y, real, aug = _experiment(rng, seeds, image_sd, seed_sd, sizes, gain=0.4)
        acc = uncertainty.interval(y, real, seed_sd=declared)
        hits.append(acc.ci95[0] <= truth <= acc.ci95[1])
        g = uncertainty.interval(y, aug - real, seed_sd=declared, paired=True)
        gain_hits.append(g.ci95[0] <= truth_gain <= g.ci95[1])
        seed_bas.append(acc.std)
    if regime == "seed-dominated" and seeds > 2:  # the regime is what it says: seeds' BA spread about 0.10
        assert 0.08 < np.median(seed_bas) < 0.12
    assert np.mean(hits) >= 0.93, f"accuracy coverage {np.mean(hits):.3f}"
    assert np.mean(gain_hits) >= 0.93, f"gain coverage {np.mean(gain_hits):.3f}"
    assert np.mean(hits) <= (0.99 if seeds == 1 else 0.98)  # and not far too wide (noise counted once)


@pytest.mark.parametrize("regime, image_sd, seed_sd", [("seed-dominated", 1.0, 0.6), ("moderate", 1.0, 0.3)])
def test_one_seed_never_helps_unless_its_seed_variance_is_declared(regime, image_sd, seed_sd):
    """The study ran one seed. Its images-only interval covers the truth in 0.56 (seed-dominated)
    to 0.80 (moderate) of runs and would call a null gain "helps" in 24% / 12%; here no word but
    "cannot tell" comes from one seed, and with the seed SD declared a null gain is called "helps"
    in at most 5% of runs."""
    rng = np.random.default_rng(7)
    declared = _seed_sd(image_sd, seed_sd)
    bare, assumed, images_only_helps = [], [], []
    for _ in range(1000):
        y, real, aug = _experiment(rng, 1, image_sd, seed_sd, gain=0.0)
        diff = aug - real
        one = uncertainty.conclude(uncertainty.interval(y, diff, paired=True), 0.02)
        bare.append(one.word)
        images_only_helps.append(one.ci95[0] > 0)
        declared_gain = uncertainty.conclude(
            uncertainty.interval(y, diff, seed_sd=declared, paired=True), 0.02
        )
        assumed.append(declared_gain.word)
    assert set(bare) == {uncertainty.Word.CANNOT_TELL}
    assert np.mean(images_only_helps) > 0.10  # what the images-only interval alone would have claimed
    assert np.mean([w == "helps" for w in assumed]) <= 0.05
    assert one.seed_variance == "not measured" and declared_gain.seed_variance == "assumed"
    assert "(1 seed, seed variance not measured): cannot tell (detectable with 80% power from at least" in (
        uncertainty.describe(one)
    )
    assert f"(1 seed, seed SD assumed {declared:.3f})" in uncertainty.describe(declared_gain)


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
    assert out.mean == pytest.approx(np.mean(bas)) and out.std == pytest.approx(np.std(bas, ddof=1))
    image = 0.0
    for c, n in enumerate((20, 12)):
        xc = real[:, y == c]
        resid = xc - xc.mean(0) - xc.mean(1)[:, None] + xc.mean()
        ms_res = (resid**2).sum() / (3 * (n - 1))
        image += max(0.0, xc.mean(0).var(ddof=1) - ms_res / 4) / n / 4
    seed = np.var(bas, ddof=1) / 4
    half = np.hypot(t.ppf(0.975, 30) * np.sqrt(image), t.ppf(0.975, 3) * np.sqrt(seed))
    assert out.ci95 == pytest.approx((np.mean(bas) - half, np.mean(bas) + half))
    assert out.se == pytest.approx(np.sqrt(image + seed))
    assert t.ppf(0.975, out.df) * out.se == pytest.approx(half)  # the effective df


def test_one_seed_covers_the_images_only_or_adds_the_declared_seed_variance():
    y = np.repeat([0, 1], (40, 20))
    scores = np.r_[np.ones(30), np.zeros(10), np.ones(10), np.zeros(10)][None]
    one = uncertainty.interval(y, scores)
    assert one.seed_part is None and one.std is None and one.seeds == 1
    assert one.seed_variance == "not measured"
    # binomial variance of each recall: 0.75 * 0.25 / 40 and 0.5 * 0.5 / 20 (with n - 1), halved twice
    image = (0.75 * 0.25 * 40 / 39 / 40 + 0.5 * 0.5 * 20 / 19 / 20) / 4
    assert one.se == pytest.approx(np.sqrt(image))
    # A declared seed SD of 0.05 adds its square (twice, for a paired gain), with a normal quantile.
    from scipy.stats import t

    assumed = uncertainty.interval(y, scores, seed_sd=0.05)
    half = np.hypot(t.ppf(0.975, 58) * np.sqrt(image), 1.959964 * 0.05)
    assert assumed.se == pytest.approx(np.sqrt(image + 0.05**2))
    assert assumed.ci95[1] - assumed.mean == pytest.approx(half, rel=1e-5)
    gain = uncertainty.interval(y, scores, seed_sd=0.05, paired=True)
    assert gain.seed_part == pytest.approx(2 * 0.05**2) and gain.seed_variance == "assumed"
    # With two seeds the measured seed part is used and the declared one is not.
    two = uncertainty.interval(y, np.vstack([scores, scores[:, ::-1]]), seed_sd=0.05)
    assert two.seed_variance == "measured" and two.seed_sd is None


def _interval(mean, se, df, ci95, seeds=3):
    """An interval with a measured seed part (its parts split evenly)."""
    return uncertainty.Interval(
        mean=mean,
        std=se,
        se=se,
        df=df,
        ci95=tuple(ci95),
        image_part=se**2 / 2,
        seed_part=se**2 / 2,
        seed_variance="measured",
        seed_sd=None,
        seeds=seeds,
    )


@pytest.mark.parametrize(
    "ci95, expected",
    [
        ([0.01, 0.09], "helps"),
        ([0.001, 0.015], "below the minimum"),  # positive, but excludes the minimum of 0.02
        ([-0.03, 0.015], "does not help"),
        ([-0.09, -0.01], "harms"),
        ([-0.03, 0.05], "cannot tell"),
    ],
)
def test_five_words_against_zero_and_the_minimum_gain(ci95, expected):
    gain = uncertainty.conclude(_interval(sum(ci95) / 2, 0.02, float("inf"), ci95), 0.02)
    assert gain.word == expected and isinstance(gain.word, uncertainty.Word)
    assert gain.mde == pytest.approx((1.959964 + 0.841621) * 0.02, rel=1e-5)  # 2.80 SE
    assert f"(3 seeds): {expected}" in uncertainty.describe(gain)
    # One seed whose variance is not measured: every interval is "cannot tell".
    assert uncertainty.word(ci95, 0.02, "not measured") == "cannot tell"


@pytest.mark.parametrize("min_gain", [0, 1, -0.1, 1.5])
def test_min_gain_outside_the_unit_interval_is_refused(min_gain):
    with pytest.raises(
        EvalError, match=rf"--min-gain must be in \(0, 1\) \(a balanced-accuracy gain\), got {min_gain}"
    ):
        uncertainty.conclude(_interval(0.0, 0.01, 5.0, (-0.02, 0.02)), min_gain)


@pytest.mark.parametrize("seed_sd", [-0.01, 0.6])
def test_seed_sd_outside_its_range_is_refused(seed_sd):
    with pytest.raises(
        EvalError,
        match=rf"--seed-sd must be in \[0, 0.5\] \(a standard deviation of balanced accuracy\), got {seed_sd}",
    ):
        uncertainty.interval([0, 0, 1, 1], np.ones((1, 4)), seed_sd=seed_sd)


def test_a_gain_crosses_the_json_boundary_and_back_with_its_word_typed():
    """`to_dict` is the form results.json holds (the interval a list, the word a string);
    `from_dict` gives back the same typed gain, which the report's words are rendered from."""
    import json

    rng = np.random.default_rng(2)
    y, real, aug = _experiment(rng, 3, 1.0, 0.3, gain=0.4)
    gain = uncertainty.conclude(uncertainty.interval(y, aug - real, paired=True), 0.02)
    stored = json.loads(json.dumps(gain.to_dict()))
    assert stored["word"] == str(gain.word) and stored["ci95"] == list(gain.ci95)
    assert list(stored) == [*uncertainty.Interval.__dataclass_fields__, "mde", "min_gain", "word"]
    back = uncertainty.Gain.from_dict(stored)
    assert back == gain and isinstance(back.word, uncertainty.Word)
    assert uncertainty.describe(stored) == uncertainty.describe(gain)
