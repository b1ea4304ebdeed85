"""Memorisation and the feature-space numbers behind the t-SNE maps, on features whose answer is
known."""

import numpy as np
import pytest

from polypsynth.evaluate import memorisation, separation
from polypsynth.evaluate.kid import KidResult
from polypsynth.evaluate.picks import Judge
from polypsynth.evaluate.selection import fidelity_inputs, select


def _sets(rng, n_ad, n_non, shift=0.0, dim=16):
    return {"AD": rng.normal(1 + shift, 1, (n_ad, dim)), "NON_AD": rng.normal(-1 + shift, 1, (n_non, dim))}


def _decided(check):
    """One space's check with its verdicts (Holm over its own checkpoints)."""
    return memorisation.correct({"space": check})["space"]


def test_a_checkpoint_that_copies_training_images_is_caught():
    rng = np.random.default_rng(0)
    train, test = _sets(rng, 120, 80), _sets(rng, 60, 40)
    fresh = _sets(rng, 50, 50)  # as new as real test images
    copied = {c: v[:50] + rng.normal(0, 0.01, v[:50].shape) for c, v in train.items()}
    half = {"AD": np.concatenate([copied["AD"][:25], fresh["AD"][:25]]), "NON_AD": fresh["NON_AD"]}
    out = _decided(memorisation.check(train, test, {"fresh": fresh, "copied": copied, "some": half}))
    # The threshold is the 5% quantile of brute-force test-to-train nearest distances.
    tr = np.concatenate(list(train.values()))
    te = np.concatenate(list(test.values()))
    brute = np.sqrt(((te[:, None] - tr[None]) ** 2).sum(-1)).min(1)
    assert out.threshold == pytest.approx(np.quantile(brute, 0.05))
    ck = out.checkpoints
    assert ck["fresh"].copies is False and ck["fresh"].near_copies < 0.15
    assert ck["copied"].copies is True and ck["copied"].near_copies == 1.0
    assert ck["some"].copies is True and ck["some"].near_copies == pytest.approx(0.25 + 0.75 * 0.05, abs=0.04)
    assert ck["copied"].chance == pytest.approx((brute < out.threshold).mean())
    assert ck["copied"].reference == "test images' share" and ck["copied"].count == 100
    # The clinical rule refuses the copying checkpoint though its margins and fidelity are perfect.
    kids = {
        n: {
            "syn_AD_vs_real_AD": KidResult(0.01, 0.001, "jackknife", 50, 1, 50, 50),
            "syn_AD_vs_real_NON_AD": KidResult(0.2, 0.001, "jackknife", 50, 1, 50, 50),
            "syn_NON_AD_vs_real_NON_AD": KidResult(0.01, 0.001, "jackknife", 50, 1, 50, 50),
            "syn_NON_AD_vs_real_AD": KidResult(0.2, 0.001, "jackknife", 50, 1, 50, 50),
        }
        for n in ("fresh", "copied")
    }
    fid = {n: {"AD": 0.9, "NON_AD": 0.9} for n in kids}
    fid["copied"] = {"AD": 1.0, "NON_AD": 1.0}
    copies = {n: ck[n].copies for n in kids}
    judge = Judge(recall={"AD": 0.9, "NON_AD": 0.9}, images={"AD": 60, "NON_AD": 40})
    counts = {n: {"AD": 50, "NON_AD": 50} for n in kids}
    sel = select(kids, fidelity=fidelity_inputs(fid, judge, counts), copies=copies)
    assert sel.clinical.table["copied"].eligible is False
    assert sel.clinical.pick == "fresh"
    only_copy = select(
        {"copied": kids["copied"]},
        fidelity=fidelity_inputs({"copied": fid["copied"]}, judge, counts),
        copies=copies,
    )
    assert only_copy.decision == "not worth using"
    assert only_copy.verdict.startswith("Not worth using: every checkpoint reproduces its training images.")
    # The control's images are the training images themselves, each fold searched against the rest
    # only: as new as test images; a checkpoint that copies them is caught.
    folds = [
        {c: np.arange(0, len(v), 2) for c, v in train.items()},
        {c: np.arange(1, len(v), 2) for c, v in train.items()},
    ]
    copies_of_held = {c: v[1::2] + rng.normal(0, 0.01, v[1::2].shape) for c, v in train.items()}
    out = _decided(
        memorisation.check(train, test, {"ctl": train, "copier": copies_of_held}, control="ctl", folds=folds)
    )
    assert out.checkpoints["ctl"].copies is False and out.checkpoints["ctl"].images == 200
    assert out.checkpoints["ctl"].near_copies < 0.15
    assert out.checkpoints["copier"].copies is True and out.checkpoints["copier"].near_copies == 1.0


def test_separation_numbers_have_their_meaning():
    rng = np.random.default_rng(1)
    real = _sets(rng, 80, 60)
    faithful = _sets(rng, 60, 60)
    swapped = {"AD": faithful["NON_AD"], "NON_AD": faithful["AD"]}
    # Synthetic images off the real ones along a direction that does not tell the classes apart
    # (the class axis is the all-ones vector), as a generator's artefacts would be.
    shifted = _sets(rng, 60, 60, shift=np.r_[np.full(8, 1.0), np.full(8, -1.0)])
    good = separation.class_separation(real, faithful)
    assert good.balanced_accuracy > 0.9 and good.chance == 0.5
    assert good.ci95[0] <= good.balanced_accuracy <= good.ci95[1] and good.p_value < 0.01
    assert separation.class_separation(real, swapped).balanced_accuracy < 0.1
    # Real vs synthetic: the same distribution is indistinguishable, a shifted one is not.
    far = separation.real_vs_synthetic(real, shifted)
    assert far.balanced_accuracy > 0.9 and far.ci95[0] > 0.8 and far.p_value < 0.01


def test_a_faithful_draw_has_an_interval_that_contains_chance():
    """The permutation null accounts for the dependence cross-validation creates: faithful draws
    (class-balanced, against an imbalanced real set, as a checkpoint's samples are) contain 0.5 in
    their interval about 95% of the time; the bootstrap over images had excluded it."""
    rng = np.random.default_rng(5)
    real = _sets(rng, 80, 40, dim=64)
    inside = []
    for seed in range(12):
        draw = separation.real_vs_synthetic(real, _sets(rng, 40, 40, dim=64), seed)
        inside.append(draw.ci95[0] <= 0.5 <= draw.ci95[1])
        assert draw.null95[0] < 0.5 < draw.null95[1] and draw.permutations == separation.PERMUTATIONS
    assert sum(inside) >= 10


def test_copies_of_another_training_pool_are_caught_once_it_is_searched():
    """Copies of stage-1 images (not in the labelled split) pass unseen by a search of the labelled
    split alone, and are all near-copies once the pool is searched too."""
    rng = np.random.default_rng(1)
    train, test = _sets(rng, 120, 80), _sets(rng, 60, 40)
    stage1 = rng.normal(0, 1.5, (300, 16))
    copier = {"AD": stage1[:50] + rng.normal(0, 0.01, (50, 16)), "NON_AD": stage1[50:100] + 0.01}
    alone = _decided(memorisation.check(train, test, {"copier": copier})).checkpoints["copier"]
    searched = _decided(memorisation.check(train, test, {"copier": copier}, pools=[stage1])).checkpoints[
        "copier"
    ]
    assert alone.copies is False and alone.near_copies < 0.1
    assert searched.copies is True and searched.near_copies == 1.0
