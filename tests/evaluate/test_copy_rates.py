"""The copy check at the study's scale: near-copies counted with an absolute criterion, simulated.

Against the earlier Fisher test (a zero chance share in pixel space, Holm at 0.01 over ~27 pairs),
which needed 7 copies of 48 images, 18 of 200, 72 of 1,000 and 139 of 2,000 before it flagged a
checkpoint, and read 100 exact copies among 2,000 as "no"."""

import numpy as np
import pytest
from quiet_memo import quiet_memo

from polypsynth.errors import EvalError
from polypsynth.evaluate import memorisation
from polypsynth.evaluate.pixels import Nearest

TRAIN, TEST = {"AD": 536, "NON_AD": 252}, {"AD": 77, "NON_AD": 36}  # the study's split
CHECKPOINTS = 8  # 1k-8k


def _features(rng, sizes, dim=8):
    return {c: rng.normal(0, 1, (n, dim)) for c, n in sizes.items()}


def _copies_of(rng, train, n_per_class, copied):
    """n_per_class fresh images per class, `copied` of them (spread over the classes) replaced by
    exact training images."""
    out = _features(rng, {c: n_per_class for c in train}, train["AD"].shape[1])
    for i in range(copied):
        c = ("AD", "NON_AD")[i % 2]
        out[c][i // 2] = train[c][rng.integers(len(train[c]))]
    return out


def _pixel(distances: dict[str, np.ndarray], test_distance: np.ndarray) -> dict:
    """pixels.search's answer for query sets whose nearest pool distances are given."""

    def near(d):
        n = len(d)
        return {"pool": Nearest(np.asarray(d, float), np.zeros(n, int), np.zeros(n, int), np.zeros(n, int))}

    return {"test": near(test_distance), **{name: near(d) for name, d in distances.items()}}


def _evaluation(rng, copier_copies=0, per_class=48):
    """One evaluation's copy check: two feature spaces and pixel space, 8 checkpoints, the
    last of which copies `copier_copies` training images; Holm over all 24 pairs."""
    memo = {}
    for space in ("inception", "efficientnet"):
        train, test = _features(rng, TRAIN), _features(rng, TEST)
        sets = {
            f"ck{i}": _features(rng, {"AD": per_class, "NON_AD": per_class}) for i in range(CHECKPOINTS - 1)
        }
        sets["copier"] = _copies_of(rng, train, per_class, copier_copies)
        memo[space] = memorisation.check(train, test, sets)
    fresh = {f"ck{i}": rng.uniform(0.3, 1.5, 2 * per_class) for i in range(CHECKPOINTS - 1)}
    copier = rng.uniform(0.3, 1.5, 2 * per_class)
    copier[:copier_copies] = rng.uniform(0.0, 0.1, copier_copies)  # the same picture, re-encoded
    found = _pixel({**fresh, "copier": copier}, rng.uniform(0.3, 1.5, 113))  # no test image leaks
    memo["pixels"] = memorisation.pixel_check(found, "test", 0.25)
    return memorisation.correct(memo)


def _flagged(memo) -> set[str]:
    return {name for m in memo.values() for name, c in m.checkpoints.items() if c.copies}


def test_fresh_draws_are_flagged_in_at_most_five_percent_of_evaluations():
    rng = np.random.default_rng(0)
    false_calls = [bool(_flagged(_evaluation(rng))) for _ in range(400)]
    assert np.mean(false_calls) <= 0.05, np.mean(false_calls)


def test_ten_percent_copies_among_48_images_per_class_are_flagged():
    rng = np.random.default_rng(1)
    runs = [_evaluation(rng, copier_copies=10) for _ in range(200)]
    caught = [_flagged(m) == {"copier"} for m in runs]
    assert np.mean(caught) >= 0.95, np.mean(caught)
    entry = runs[0]["pixels"].checkpoints["copier"]
    assert entry.count == 10 and entry.images == 96 and entry.reference == "tolerance 1%"
    assert memorisation.status(entry.to_dict()) == "copies"
    quiet = runs[0]["pixels"].checkpoints["ck0"]
    assert quiet.count == 0
    # 0 of 96: the one-sided 95% Clopper-Pearson bound 1 - 0.05^(1/96) = 3.1%.
    assert quiet.upper95 == pytest.approx(1 - 0.05 ** (1 / 96))
    assert memorisation.status(quiet.to_dict()) == "not detected (rate below 3.1% at 95%)"


@pytest.mark.parametrize("n, needed", [(48, 4), (200, 8), (1000, 21), (2000, 35)])
def test_copies_needed_before_a_checkpoint_is_flagged(n, needed):
    """In pixel space, beside 26 quiet (space, checkpoint) pairs: the fewest copies flagged, against
    an independent count from the binomial tail (rate above the 1% tolerance, Bonferroni's first
    Holm step at 5% / 27)."""
    from scipy.stats import binom

    expected = next(k for k in range(n) if binom.sf(k - 1, n, 0.01) < 0.05 / 27)
    assert expected == needed

    def flagged(k):
        d = np.ones(n)
        d[:k] = 0.0
        memo = {"pixels": memorisation.pixel_check(_pixel({"ck": d}, np.ones(113)), "test", 0.25)}
        memo["quiet"] = quiet_memo({f"q{i}": 1.0 for i in range(26)})
        return memorisation.correct(memo)["pixels"].checkpoints["ck"].copies

    assert not flagged(needed - 1) and flagged(needed)


def test_a_hundred_exact_copies_among_two_thousand_images_are_flagged():
    rng = np.random.default_rng(3)
    memo = _evaluation(rng, copier_copies=100, per_class=1000)
    assert _flagged(memo) == {"copier"}
    entry = memo["pixels"].checkpoints["copier"]
    assert entry.count == 100 and entry.p_adjusted < 1e-20


def test_a_copy_tolerance_outside_the_unit_interval_is_refused():
    with pytest.raises(
        EvalError, match=r"--copy-tolerance must be in \[0, 1\) \(a share of the synthetic images\), got 1.0"
    ):
        memorisation.check_tolerance(1.0)
