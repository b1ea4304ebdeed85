import numpy as np
import pytest

from polypsynth.evaluate.classify import classification_metrics, summarise
from polypsynth.evaluate.kid import KidResult, KidTable, MarginResult
from polypsynth.evaluate.selection import fidelity_test, select
from polypsynth.evaluate.uncertainty import gain_interval


def test_metrics_match_hand_counts():
    # AD = 0, NON_AD = 1. Confusion (rows true): AD -> [3 AD, 1 NON_AD]; NON_AD -> [2 AD, 4 NON_AD].
    y_true = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    y_pred = [0, 0, 0, 1, 0, 0, 1, 1, 1, 1]
    m = classification_metrics(y_true, y_pred)
    assert m["confusion"] == [[3, 1], [2, 4]]
    assert m["AD"]["precision"] == pytest.approx(3 / 5) and m["AD"]["recall"] == pytest.approx(3 / 4)
    assert m["AD"]["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert m["NON_AD"]["precision"] == pytest.approx(4 / 5) and m["NON_AD"]["recall"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m["AD"]["support"] == 4


def test_summary_and_paired_gain():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, 100)

    def run(acc, seed):
        r = np.random.default_rng(seed)
        pred = np.where(r.random(100) < acc, y_true, 1 - y_true)
        return {"metrics": classification_metrics(y_true, pred), "y_true": y_true, "y_pred": pred}

    real = [run(0.6, s) for s in range(5)]
    better = [run(0.95, 10 + s) for s in range(5)]
    s = summarise(real)
    assert s["seeds"] == 5 and s["balanced_accuracy"]["std"] > 0
    assert np.sum(s["confusion"]) == 500
    assert s["balanced_accuracy"]["mean"] == pytest.approx(
        np.mean([r["metrics"]["balanced_accuracy"] for r in real])
    )
    g = gain_interval(real, better)
    assert g["mean"] > 0.2 and g["ci95"][0] > 0 and g["word"] == "helps"  # clearly positive
    assert g["ci95"][0] <= g["mean"] <= g["ci95"][1]
    one = summarise(real[:1])  # one seed: no spread is shown as if measured
    assert one["balanced_accuracy"]["std"] is None and one["AD"]["recall"]["std"] is None


def _kids(same_ad, cross_ad, same_non, cross_non, se=0.002) -> KidTable:
    def k(mean):  # the KID of two sets of 48 images, one block
        return KidResult(mean, se, "jackknife", 48, 1, 48, 48)

    return {
        "syn_AD_vs_real_AD": k(same_ad),
        "syn_AD_vs_real_NON_AD": k(cross_ad),
        "syn_NON_AD_vs_real_NON_AD": k(same_non),
        "syn_NON_AD_vs_real_AD": k(cross_non),
    }


JUDGE = {"recall": {"AD": 0.83, "NON_AD": 0.53}, "images": {"AD": 77, "NON_AD": 36}}  # the study's


def _select(kids, fidelity, gains=None, n=48, **kw):
    counts = {name: {"AD": n, "NON_AD": n} for name in kids}
    return select(kids, fidelity, kw.pop("judge", JUDGE), counts, gains, **kw)


def _gain(mean, lo, hi, word):
    return {"mean": mean, "ci95": [lo, hi], "word": word, "mde": 0.1, "margin": 0.02}


def test_naive_and_clinical_rules_disagree_like_in_the_study():
    # step-8k has the best same-class KID, but its classes collapse onto each other (Table 2's point).
    kids = {
        "step-2k": _kids(0.079, 0.118, 0.090, 0.110),
        "step-4k": _kids(0.069, 0.106, 0.085, 0.090),
        "step-8k": _kids(0.069, 0.070, 0.081, 0.060),
    }
    fidelity = {
        "step-2k": {"AD": 0.8, "NON_AD": 0.5},
        "step-4k": {"AD": 0.7, "NON_AD": 0.5},
        "step-8k": {"AD": 0.8, "NON_AD": 0.5},
    }
    gains = {
        "step-2k": _gain(0.02, 0.005, 0.04, "helps"),
        "step-4k": _gain(-0.01, -0.03, 0.01, "does not help"),
        "step-8k": _gain(-0.04, -0.07, -0.01, "does not help"),
    }
    out = _select(kids, fidelity, gains)
    assert out["naive"]["pick"] == "step-8k"
    assert out["clinical"]["pick"] == "step-2k"
    assert out["clinical"]["table"]["step-8k"]["classes"] == "not apart"
    assert out["agreement"] == {
        "note": "not computed: rank agreement needs at least 5 checkpoints, 3 evaluated"
    }
    assert out["decision"] == "worth using"
    assert out["verdict"] == (
        "Worth using: step-2k. Its synthetic classes stay apart and recognisable, and adding its images to the "
        "real training data changed balanced accuracy by +0.020 [+0.005, +0.040]: helps. The lowest same-class "
        "KID, the rule the study warns against, would pick step-8k."
    )


def test_a_perfect_generator_is_not_rejected_for_a_weak_judge():
    """The study's judge recalls NON_AD at 0.53: a perfect generator's NON_AD fidelity falls at or
    below 0.5 four times in ten. Fidelity 0.49 is not held against it; a clear gain makes it worth using."""
    kids = {"a": _kids(0.05, 0.07, 0.05, 0.07)}
    out = _select(kids, {"a": {"AD": 0.85, "NON_AD": 0.49}}, {"a": _gain(0.06, 0.03, 0.09, "helps")})
    row = out["clinical"]["table"]["a"]
    assert (
        row["fidelity"]["NON_AD"]["status"] == "untestable"
    )  # the judge's own recall is not clearly above 0.5
    assert row["fidelity"]["AD"]["status"] == "kept" and row["eligible"]
    assert out["decision"] == "worth using" and out["verdict"].startswith("Worth using: a.")
    # A class the judge recognises in real images but not in synthetic ones is lost.
    lost = _select(kids, {"a": {"AD": 0.2, "NON_AD": 0.49}}, {"a": _gain(0.06, 0.03, 0.09, "helps")})
    assert lost["clinical"]["table"]["a"]["fidelity"]["AD"]["status"] == "lost"
    assert lost["decision"] == "cannot decide"
    assert "the judge recognises its AD clearly less often than real AD" in lost["verdict"]
    assert "Yet the images of a clearly helped the classifier." in lost["verdict"]


def test_fidelity_difference_interval_is_newcombes():
    """Independent reference: Newcombe's hybrid score interval (method 10) built from the Wilson
    intervals, computed here from the closed form."""

    def wilson(x, n, z=1.959963984540054):
        p = x / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half

    out = fidelity_test(30 / 48, 48, 20 / 36, 36)
    l1, u1 = wilson(30, 48)
    l2, u2 = wilson(20, 36)
    d = 30 / 48 - 20 / 36
    expected = [
        d - np.sqrt((30 / 48 - l1) ** 2 + (u2 - 20 / 36) ** 2),
        d + np.sqrt((u1 - 30 / 48) ** 2 + (20 / 36 - l2) ** 2),
    ]
    assert out["diff_ci95"] == pytest.approx(expected, abs=1e-9)
    assert out["status"] == "untestable"  # 20 of 36 is not clearly above chance
    assert fidelity_test(0.9, 48, 0.9, 100)["status"] == "kept"
    assert fidelity_test(0.5, 48, 0.9, 100)["status"] == "lost"


def test_the_studys_table_2_has_no_eligible_checkpoint():
    """In the study, synthetic NON_AD sits closer to real AD than to real NON_AD at every
    iteration: the clinical rule accepts none."""
    study = {
        "1k": _kids(0.073, 0.111, 0.094, 0.061),
        "2k": _kids(0.079, 0.118, 0.100, 0.067),
        "4k": _kids(0.069, 0.106, 0.085, 0.057),
        "8k": _kids(0.069, 0.105, 0.081, 0.061),
    }
    fidelity = {k: {"AD": 0.8, "NON_AD": 0.6} for k in study}
    out = _select(study, fidelity)
    assert out["naive"]["pick"] == "8k" and out["clinical"]["pick"] is None
    assert all(t["margin_NON_AD"] < 0 < t["margin_AD"] for t in out["clinical"]["table"].values())


def test_the_positive_control_tells_whether_the_rules_and_the_test_split_can_decide():
    kids = {"a": _kids(0.05, 0.04, 0.05, 0.04), "held-out real": _kids(0.05, 0.051, 0.05, 0.051, se=0.003)}
    fid = {n: {"AD": 0.8, "NON_AD": 0.5} for n in kids}
    flat = _gain(-0.001, -0.01, 0.01, "does not help")
    gains = {"a": flat, "held-out real": flat}
    out = _select(kids, fid, gains, control="held-out real")
    assert out["naive"]["pick"] == "a" and "held-out real" not in out["naive"]["scores"]
    assert out["control"]["eligible"] is False
    assert out["control"]["reasons"] == ["its cross-class margins lie within their 95% uncertainty"]
    # Real images do not help either: the experiment has no power, so "a" is not condemned.
    assert out["decision"] == "cannot decide"
    assert (
        "Held-out real images fail the same rules (its cross-class margins lie within their 95% uncertainty): on "
        in out["verdict"]
    )
    assert (
        "Adding held-out real images shows no clear gain either (-0.001 [-0.010, +0.010]: does not help"
        in out["verdict"]
    )
    # When real images do help, the same flat gain of "a" says it is not worth using.
    gains["held-out real"] = _gain(0.05, 0.02, 0.08, "helps")
    out = _select(kids, fid, gains, control="held-out real")
    assert out["decision"] == "not worth using"
    assert out["verdict"].startswith(
        "Not worth using: no checkpoint's images raise balanced accuracy by 0.02 or more"
    )


def test_no_verdict_condemns_a_checkpoint_whose_interval_holds_useful_gains():
    kids = {
        "a": _kids(0.05, 0.04, 0.05, 0.04),
        "b": _kids(0.05, 0.04, 0.05, 0.04),
        "ctl": _kids(0.05, 0.07, 0.05, 0.07),
    }
    fid = {n: {"AD": 0.8, "NON_AD": 0.5} for n in kids}
    gains = {
        "a": _gain(-0.001, -0.01, 0.01, "does not help"),
        "b": _gain(0.01, -0.03, 0.05, "cannot tell"),
        "ctl": _gain(0.05, 0.02, 0.08, "helps"),
    }
    out = _select(kids, fid, gains, control="ctl")
    assert out["control"]["eligible"] and out["decision"] == "cannot decide"
    assert "No checkpoint passes the clinical rules: a: its classes sit closer" in out["verdict"]


def test_margins_within_their_uncertainty_cannot_decide():
    # Margins of +0.001 with standard errors of 0.003 per KID: positive, but not beyond the noise.
    kids = {"a": _kids(0.050, 0.051, 0.050, 0.051, se=0.003), "b": _kids(0.05, 0.04, 0.05, 0.04, se=0.001)}
    fid = {"a": {"AD": 0.9, "NON_AD": 0.5}, "b": {"AD": 0.9, "NON_AD": 0.5}}
    out = _select(kids, fid)
    table = out["clinical"]["table"]
    assert table["a"]["classes"] == "undecided" and not table["a"]["eligible"]
    assert table["a"]["margin_AD_se"] == pytest.approx(0.003 * np.sqrt(2))
    assert table["b"]["classes"] == "not apart"
    assert out["clinical"]["pick"] is None and out["decision"] == "cannot decide"
    assert "a: its cross-class margins lie within their 95% uncertainty" in out["verdict"]
    # The same margins measured ten times more precisely are clearly apart.
    precise = {"a": _kids(0.050, 0.051, 0.050, 0.051, se=0.0003)}
    assert _select(precise, {"a": fid["a"]})["clinical"]["pick"] == "a"


def test_jointly_measured_margins_are_used_when_present():
    kids = {"a": _kids(0.050, 0.051, 0.050, 0.051, se=0.003)}
    kids["a"]["margin_AD"] = MarginResult(0.001, 0.0002, "jackknife")  # from kid.kid_table
    kids["a"]["margin_NON_AD"] = MarginResult(0.001, 0.0002, "jackknife")
    out = _select(kids, {"a": {"AD": 0.9, "NON_AD": 0.5}})
    assert out["clinical"]["table"]["a"]["margin_AD_se"] == 0.0002
    assert out["clinical"]["pick"] == "a"
    assert out["verdict"].startswith(
        "Cannot decide. a passes the clinical rules; augmentation was not measured, so whether its images help"
    )


def test_rank_agreement_from_five_checkpoints():
    kids = {f"c{i}": _kids(0.05, 0.05 + 0.01 * i, 0.05, 0.05 + 0.01 * i) for i in range(1, 6)}
    fidelity = {c: {"AD": 0.8, "NON_AD": 0.5} for c in kids}
    gains = {f"c{i}": _gain(0.01 * i, 0.0, 0.02 * i, "cannot tell") for i in range(1, 6)}
    out = _select(kids, fidelity, gains)
    assert out["agreement"]["clinical"] == pytest.approx(1.0)  # wider margins, larger gains


def test_table1_runs_its_controls_paired_by_seed():
    from polypsynth.evaluate import table1
    from polypsynth.evaluate.sets import Checkpoint

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 150)
    calls = []

    def run(acc, seed):
        r = np.random.default_rng(seed)
        pred = np.where(r.random(150) < acc, y_true, 1 - y_true)
        return {"metrics": classification_metrics(y_true, pred), "y_true": y_true, "y_pred": pred}

    def run_real(seed):
        calls.append(("real", seed))
        return run(0.65, seed)

    def run_augmented(ck, picks, seed, swap):
        calls.append((ck.name, {c: len(v) for c, v in picks.items()}, seed, swap))
        return run(0.5 if swap else 0.8, 100 + seed)

    cks = [Checkpoint(n, i, {"AD": list(range(30)), "NON_AD": list(range(20))}) for i, n in enumerate("ab")]
    out = table1.run_table(cks, 3, 5, 30, run_real, run_augmented, swap_control=["b"], margin=0.05)
    assert [c for c in calls if c[0] == "real"] == [("real", s) for s in (5, 6, 7)]
    assert [c for c in calls if c[0] == "a"] == [("a", {"AD": 15, "NON_AD": 15}, s, False) for s in (5, 6, 7)]
    assert [c[3] for c in calls if c[0] == "b"] == [False] * 3 + [True] * 3
    assert out["augmented"]["a"]["added"] == {"AD": 15, "NON_AD": 15}
    assert out["gains"]["a"]["word"] == "helps" and out["gains"]["a"]["margin"] == 0.05
    assert set(out["controls"]["swapped"]) == {"b"} and out["controls"]["swapped"]["b"]["ci95"][1] < 0
