import numpy as np
import pytest

from polypsynth.evaluate.classify import ClassifierRun, classification_metrics, summarise
from polypsynth.evaluate.kid import ContrastResult, KidResult, KidTable
from polypsynth.evaluate.picks import Judge
from polypsynth.evaluate.selection import fidelity_inputs, fidelity_test, judge_skill, select
from polypsynth.evaluate.table1 import gain_interval
from polypsynth.evaluate.uncertainty import Interval, conclude


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
        return ClassifierRun.judged(y_true, pred)

    real = [run(0.6, s) for s in range(5)]
    better = [run(0.95, 10 + s) for s in range(5)]
    s = summarise(real)
    assert s.seeds == 5 and s.balanced_accuracy.std > 0
    assert np.sum(s.confusion) == 500
    assert s.balanced_accuracy.mean == pytest.approx(np.mean([r.metrics["balanced_accuracy"] for r in real]))
    g = gain_interval(real, better)
    assert g.mean > 0.2 and g.ci95[0] > 0 and g.word == "helps"  # clearly positive
    assert g.ci95[0] <= g.mean <= g.ci95[1]
    one = summarise(real[:1])  # one seed: no spread is shown as if measured
    assert one.balanced_accuracy.std is None and one.per_class["AD"]["recall"].std is None


def _kids(same_ad, cross_ad, same_non, cross_non, se=0.002) -> KidTable:
    def k(mean):  # the KID of two sets of 48 images, one block
        return KidResult(mean, se, "jackknife", 48, 1, 48, 48)

    return {
        "syn_AD_vs_real_AD": k(same_ad),
        "syn_AD_vs_real_NON_AD": k(cross_ad),
        "syn_NON_AD_vs_real_NON_AD": k(same_non),
        "syn_NON_AD_vs_real_AD": k(cross_non),
    }


JUDGE = Judge(recall={"AD": 0.83, "NON_AD": 0.53}, images={"AD": 77, "NON_AD": 36})  # the study's


def _select(kids, fidelity=None, gains=None, n=48, judge=JUDGE, **kw):
    counts = {name: {"AD": n, "NON_AD": n} for name in kids}
    inputs = fidelity_inputs(fidelity, judge, counts) if fidelity is not None else None
    return select(kids, fidelity=inputs, gains=gains, **kw)


def _gain(mean, lo, hi, seeds=3, min_gain=0.02):
    """A gain with its word decided by uncertainty.conclude (normal interval of that width)."""
    se = (hi - lo) / 3.92
    measured = dict(image_part=se**2 / 2, seed_part=se**2 / 2, seed_variance="measured", seed_sd=None)
    return conclude(Interval(mean, se, se, float("inf"), (lo, hi), **measured, seeds=seeds), min_gain)


def test_naive_and_clinical_rules_disagree_like_in_the_study():
    # step-8k has the best same-class KID, but its classes collapse onto each other (Table 2's point).
    kids = {
        "step-2k": _kids(0.079, 0.118, 0.090, 0.110),
        "step-4k": _kids(0.069, 0.106, 0.085, 0.095),
        "step-8k": _kids(0.069, 0.070, 0.081, 0.060),
    }
    fidelity = {
        "step-2k": {"AD": 0.8, "NON_AD": 0.5},
        "step-4k": {"AD": 0.7, "NON_AD": 0.5},
        "step-8k": {"AD": 0.8, "NON_AD": 0.5},
    }
    gains = {
        "step-2k": _gain(0.02, 0.005, 0.04),
        "step-4k": _gain(-0.01, -0.03, 0.01),
        "step-8k": _gain(-0.04, -0.07, -0.01),
    }
    out = _select(kids, fidelity, gains)
    assert [gains[n].word for n in gains] == ["helps", "does not help", "harms"]
    assert out.naive.pick == "step-8k"
    assert out.clinical.pick == "step-2k"  # the larger smaller margin (0.020 against 0.010)
    assert out.clinical.eligible == ["step-2k", "step-4k"]
    assert out.clinical.table["step-8k"].classes == "not apart"
    assert out.agreement == {"note": "not computed: rank agreement needs at least 5 checkpoints, 3 evaluated"}
    assert out.decision == "worth using"
    p_clinical, p_naive = out.clinical.probability, out.naive.probability
    assert 0.5 < p_clinical < 1 and 0 < p_naive < 1
    assert out.verdict == (
        f"Worth using: step-2k ({p_clinical:.0%} of redraws); its synthetic classes stay apart and recognisable, "
        "and its images raise balanced accuracy: +0.020 [+0.005, +0.040] (3 seeds): helps."
    )
    assert out.notes[-1] == (
        f"The lowest same-class KID, the rule the study warns against, would pick step-8k ({p_naive:.0%} of redraws)."
    )
    # With step-2k not eligible (its NON_AD margin collapsed), step-4k is picked; its images do not help,
    # and without a positive control nothing is "not worth using".
    kids["step-2k"] = _kids(0.079, 0.118, 0.090, 0.080)
    out = _select(kids, fidelity, gains)
    assert out.clinical.pick == "step-4k" and out.decision == "cannot decide"
    assert out.verdict == (
        "Cannot decide: step-4k (100% of redraws) passes the clinical rules, but its images' gain is -0.010 "
        "[-0.030, +0.010] (3 seeds): does not help (upper bound below the minimum gain +0.020)."
    )
    assert out.notes[1] == "Yet the images of step-2k clearly helped the classifier."
    assert out.notes[2] == (
        "No positive control was run: nothing shows that this test split could see a gain of +0.020, so gains "
        "below it say nothing against the images."
    )
    assert out.notes[0].startswith("step-2k, step-8k: its synthetic NON_AD sits closer to real AD")


def test_the_pick_is_made_among_eligible_checkpoints_only_and_ties_follow_the_stated_rule():
    fid = {"a": {"AD": 0.8, "NON_AD": 0.6}, "b": {"AD": 0.8, "NON_AD": 0.7}, "c": {"AD": 0.8, "NON_AD": 0.6}}
    kids = {
        "a": _kids(0.05, 0.07, 0.05, 0.07),
        "b": _kids(0.05, 0.07, 0.05, 0.07),
        "c": _kids(0.05, 0.07, 0.05, 0.07),
    }
    out = _select(kids, fid)
    # Equal margins: the higher mean fidelity (b), then the earlier checkpoint (a before c).
    assert out.clinical.eligible == ["b", "a", "c"] and out.clinical.pick == "b"
    assert out.clinical.ties == "ties go to the higher mean fidelity, then to the earlier checkpoint"
    # An ineligible checkpoint, however its numbers move, does not change the pick among the rest.
    picks = set()
    for cross in (0.03, 0.04, 0.045, 0.0495):
        kids["x"] = _kids(0.06, cross, 0.01, 0.2)  # AD margin below zero: not apart
        fid["x"] = {"AD": 1.0, "NON_AD": 1.0}
        moved = _select(kids, fid)
        assert moved.clinical.table["x"].eligible is False
        picks.add(moved.clinical.pick)
    assert picks == {"b"}


def test_pick_probability_matches_an_independent_simulation():
    """The study's Table 2 (KIDs with their errors): the naive pick is 8k, and redraws keep it in
    about 71% of cases, 4k and 6k taking most of the rest (an independent Monte Carlo agrees)."""
    table2 = STUDY_TABLE2
    kids = {n: _kids_se(*row) for n, row in table2.items()}
    out = _select(kids)
    assert out.naive.pick == "8k"
    rng = np.random.default_rng(11)
    names = list(table2)
    draws = np.stack(
        [
            (rng.normal(r[0][0], r[0][1], 200_000) + rng.normal(r[2][0], r[2][1], 200_000)) / 2
            for r in table2.values()
        ]
    )
    share = {n: float(np.mean(draws.argmin(0) == i)) for i, n in enumerate(names)}
    assert out.naive.probability == pytest.approx(share["8k"], abs=0.015)
    assert 0.5 < out.naive.probability < 0.75
    assert out.clinical.pick is None and out.clinical.probability is None


STUDY_TABLE2 = {  # the study's Table 2: (mean, std) of AD vs AD, AD vs NON_AD, NON_AD vs NON_AD, NON_AD vs AD
    "1k": ((0.073, 0.002), (0.111, 0.003), (0.094, 0.003), (0.061, 0.001)),
    "2k": ((0.079, 0.002), (0.118, 0.004), (0.100, 0.003), (0.067, 0.002)),
    "3k": ((0.077, 0.002), (0.114, 0.004), (0.087, 0.003), (0.061, 0.001)),
    "4k": ((0.069, 0.001), (0.106, 0.004), (0.085, 0.003), (0.057, 0.002)),
    "5k": ((0.074, 0.002), (0.114, 0.004), (0.083, 0.003), (0.056, 0.002)),
    "6k": ((0.069, 0.002), (0.104, 0.003), (0.087, 0.003), (0.064, 0.002)),
    "7k": ((0.076, 0.002), (0.115, 0.003), (0.091, 0.003), (0.064, 0.002)),
    "8k": ((0.069, 0.002), (0.105, 0.004), (0.081, 0.003), (0.061, 0.002)),
}


def _kids_se(ad_ad, ad_non, non_non, non_ad) -> KidTable:
    def k(v):
        return KidResult(v[0], v[1], "published", 0, 1, 0, 0)

    return {
        "syn_AD_vs_real_AD": k(ad_ad),
        "syn_AD_vs_real_NON_AD": k(ad_non),
        "syn_NON_AD_vs_real_NON_AD": k(non_non),
        "syn_NON_AD_vs_real_AD": k(non_ad),
    }


def test_a_perfect_generator_is_not_rejected_for_a_weak_judge():
    """The study's judge recalls NON_AD at 0.53. Fidelity 0.49 is within what a perfect generator
    shows against that recall: not held against it; a clear gain makes it worth using."""
    kids = {"a": _kids(0.05, 0.07, 0.05, 0.07)}
    out = _select(kids, {"a": {"AD": 0.85, "NON_AD": 0.49}}, {"a": _gain(0.06, 0.03, 0.09)}, n=400)
    row = out.clinical.table["a"]
    assert row.fidelity["NON_AD"].status == "undecided"  # its interval holds losses beyond 0.10
    assert row.fidelity["AD"].status == "kept" and row.eligible
    assert out.decision == "worth using" and out.verdict.startswith("Worth using: a (100% of redraws)")
    # A class the judge recognises in real images but not in synthetic ones is lost.
    lost = _select(kids, {"a": {"AD": 0.2, "NON_AD": 0.49}}, {"a": _gain(0.06, 0.03, 0.09)})
    assert lost.clinical.table["a"].fidelity["AD"].status == "lost"
    assert lost.decision == "cannot decide"
    assert lost.verdict == "Cannot decide: no checkpoint passes the clinical rules."
    assert "a: the judge recognises its AD clearly less often than real AD." in lost.notes
    assert "Yet the images of a clearly helped the classifier." in lost.notes


def test_the_fidelity_gate_reads_the_judges_skill_not_its_bias():
    """A judge with no skill that names nearly everything AD (recall 0.90 / 0.10, Youden's J 0)
    would have "kept" junk AD images; its skill is not shown, so fidelity is untestable."""
    leaning = Judge(recall={"AD": 0.90, "NON_AD": 0.10}, images={"AD": 77, "NON_AD": 36})
    skill = judge_skill(leaning.recall, leaning.images)
    assert (
        skill["youden"] == pytest.approx(0.0)
        and skill["ci95"][0] < 0 < skill["ci95"][1]
        and not skill["shown"]
    )
    junk = _select({"a": _kids(0.05, 0.07, 0.05, 0.07)}, {"a": {"AD": 0.9, "NON_AD": 0.1}}, judge=leaning)
    assert {t.status for t in junk.clinical.table["a"].fidelity.values()} == {"untestable"}
    # The study's judge (0.83 / 0.53: J = 0.36) has shown skill.
    skill = judge_skill(JUDGE.recall, JUDGE.images)
    assert skill["shown"] and skill["youden"] == pytest.approx(0.36)
    # "kept" only when the interval excludes a loss of more than 0.10: [-0.28, +0.02] is not kept.
    wide = fidelity_test(0.60, 48, 0.73, 36)
    assert wide.diff_ci95[0] < -0.25 and wide.diff_ci95[1] > 0 and wide.status == "undecided"


def test_fidelity_difference_interval_is_newcombes():
    """Independent reference: Newcombe's hybrid score interval (method 10) built from the Wilson
    intervals, computed here from the closed form; Youden's J from the same intervals."""

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
    assert out.diff_ci95 == pytest.approx(tuple(expected), abs=1e-9)
    assert fidelity_test(0.9, 200, 0.9, 300).status == "kept"
    assert fidelity_test(0.5, 48, 0.9, 100).status == "lost"
    la, ua = wilson(64, 77)
    ln, un = wilson(19, 36)
    j = 64 / 77 + 19 / 36 - 1
    skill = judge_skill({"AD": 64 / 77, "NON_AD": 19 / 36}, {"AD": 77, "NON_AD": 36})
    assert skill["ci95"] == pytest.approx(
        [j - np.hypot(64 / 77 - la, 19 / 36 - ln), j + np.hypot(ua - 64 / 77, un - 19 / 36)], abs=1e-9
    )


def test_the_studys_table_2_has_no_eligible_checkpoint():
    """In the study, synthetic NON_AD sits closer to real AD than to real NON_AD at every
    iteration: the clinical rule accepts none. The shift-free contrast m_AD + m_NON_AD stays
    positive: both synthetic classes drifted towards real AD, they did not collapse."""
    study = {n: _kids_se(*row) for n, row in STUDY_TABLE2.items()}
    fidelity = {k: {"AD": 0.8, "NON_AD": 0.6} for k in study}
    out = _select(study, fidelity)
    assert out.naive.pick == "8k" and out.clinical.pick is None
    table = out.clinical.table
    assert all(t.margin_NON_AD < 0 < t.margin_AD for t in table.values())
    assert all(t.shift_free > 0 for t in table.values())
    assert table["8k"].shift_free == pytest.approx(0.105 - 0.069 + 0.061 - 0.081)
    assert table["8k"].shift_free_se == pytest.approx(np.sqrt(0.002**2 + 0.004**2 + 0.003**2 + 0.002**2))


def test_the_positive_control_tells_whether_the_rules_and_the_test_split_can_decide():
    kids = {"a": _kids(0.05, 0.04, 0.05, 0.04), "held-out real": _kids(0.05, 0.051, 0.05, 0.051, se=0.003)}
    fid = {n: {"AD": 0.8, "NON_AD": 0.5} for n in kids}
    flat = _gain(-0.001, -0.01, 0.01)
    gains = {"a": flat, "held-out real": flat}
    out = _select(kids, fid, gains, control="held-out real")
    assert out.naive.pick == "a" and "held-out real" not in out.naive.scores
    assert out.control.eligible is False
    assert out.control.reasons == ["its AD and NON_AD margins lie within the 95% uncertainty"]
    # Real images do not help either: the experiment has no power, so "a" is not condemned.
    assert out.decision == "cannot decide"
    assert (
        "Held-out real images fail the same rules (its AD and NON_AD margins lie within the 95% uncertainty): on "
        in " ".join(out.notes)
    )
    assert (
        "Adding held-out real images shows no gain of the minimum size either (-0.001 [-0.010, +0.010] (3 seeds): "
        "does not help" in " ".join(out.notes)
    )
    # When real images do help, the same flat gain of "a" says it is not worth using.
    gains["held-out real"] = _gain(0.05, 0.02, 0.08)
    out = _select(kids, fid, gains, control="held-out real")
    assert out.decision == "not worth using"
    assert out.verdict == (
        "Not worth using: no checkpoint's images raise balanced accuracy by +0.020 or more, while held-out real "
        "images do."
    )
    # A gain above zero but wholly below the minimum is not "helps": [+0.001, +0.015] against 0.02.
    gains["a"] = _gain(0.008, 0.001, 0.015)
    assert gains["a"].word == "below the minimum"
    assert _select(kids, fid, gains, control="held-out real").decision == "not worth using"


def test_a_harmful_control_is_called_so():
    """The README demo's control: adding held-out real images cost -0.078 [-0.118, -0.038]."""
    kids = {"a": _kids(0.05, 0.07, 0.05, 0.07), "ctl": _kids(0.05, 0.07, 0.05, 0.07)}
    fid = {n: {"AD": 0.8, "NON_AD": 0.6} for n in kids}
    gains = {"a": _gain(-0.066, -0.344, 0.212, seeds=2), "ctl": _gain(-0.078, -0.118, -0.038, seeds=2)}
    out = _select(kids, fid, gains, control="ctl")
    assert gains["ctl"].word == "harms" and out.decision == "cannot decide"
    assert (
        "Adding held-out real images lowers balanced accuracy (-0.078 [-0.118, -0.038] (2 seeds): harms (upper bound "
        "below 0)): this classifier does not gain from more real images of this kind" in " ".join(out.notes)
    )
    assert "cannot show a gain" not in " ".join(out.notes)


def test_every_checkpoint_copying_is_read_after_the_control():
    kids = {
        "a": _kids(0.05, 0.07, 0.05, 0.07),
        "b": _kids(0.05, 0.07, 0.05, 0.07),
        "ctl": _kids(0.05, 0.07, 0.05, 0.07),
    }
    fid = {n: {"AD": 0.8, "NON_AD": 0.6} for n in kids}
    copies = {"a": True, "b": True, "ctl": False}
    out = _select(kids, fid, copies=copies, control="ctl")
    assert out.decision == "not worth using"
    assert out.verdict.startswith("Not worth using: every checkpoint reproduces its training images.")
    copies["ctl"] = True  # held-out real images flagged too: the check cannot tell
    out = _select(kids, fid, copies=copies, control="ctl")
    assert out.decision == "cannot decide"
    assert (
        "the copy check flags every checkpoint and the held-out real images alike, so it cannot tell copies"
        in out.verdict
    )


def test_no_verdict_condemns_a_checkpoint_whose_interval_holds_useful_gains():
    kids = {
        "a": _kids(0.05, 0.04, 0.05, 0.04),
        "b": _kids(0.05, 0.04, 0.05, 0.04),
        "ctl": _kids(0.05, 0.07, 0.05, 0.07),
    }
    fid = {n: {"AD": 0.8, "NON_AD": 0.5} for n in kids}
    gains = {
        "a": _gain(-0.001, -0.01, 0.01),
        "b": _gain(0.01, -0.03, 0.05),
        "ctl": _gain(0.05, 0.02, 0.08),
    }
    out = _select(kids, fid, gains, control="ctl")
    assert out.control.eligible and out.decision == "cannot decide"
    assert out.verdict == "Cannot decide: no checkpoint passes the clinical rules."
    assert out.notes[0] == (
        "a, b: its synthetic AD sits closer to real NON_AD than to real AD (AD margin below zero), its synthetic "
        "NON_AD sits closer to real AD than to real NON_AD (NON_AD margin below zero)."
    )


def test_margins_within_their_uncertainty_cannot_decide():
    # Margins of +0.001 with standard errors of 0.003 per KID: positive, but not beyond the noise.
    kids = {"a": _kids(0.050, 0.051, 0.050, 0.051, se=0.003), "b": _kids(0.05, 0.04, 0.05, 0.04, se=0.001)}
    fid = {"a": {"AD": 0.9, "NON_AD": 0.5}, "b": {"AD": 0.9, "NON_AD": 0.5}}
    out = _select(kids, fid)
    table = out.clinical.table
    assert table["a"].classes == "undecided" and not table["a"].eligible
    assert table["a"].margin_AD_se == pytest.approx(0.003 * np.sqrt(2))
    assert table["b"].classes == "not apart"
    assert out.clinical.pick is None and out.decision == "cannot decide"
    assert "a: its AD and NON_AD margins lie within the 95% uncertainty." in out.notes
    assert table["a"].margins == {"AD": "within its uncertainty", "NON_AD": "within its uncertainty"}
    # The same margins measured ten times more precisely are clearly apart.
    precise = {"a": _kids(0.050, 0.051, 0.050, 0.051, se=0.0003)}
    assert _select(precise, {"a": fid["a"]}).clinical.pick == "a"


def test_jointly_measured_margins_are_used_when_present():
    kids = {"a": _kids(0.050, 0.051, 0.050, 0.051, se=0.003)}
    kids["a"]["margin_AD"] = ContrastResult(0.001, 0.0002, "jackknife")  # from kid.kid_table
    kids["a"]["margin_NON_AD"] = ContrastResult(0.001, 0.0002, "jackknife")
    out = _select(kids, {"a": {"AD": 0.9, "NON_AD": 0.5}})
    assert out.clinical.table["a"].margin_AD_se == 0.0002
    assert out.clinical.pick == "a"
    assert out.verdict == (
        "Cannot decide: a (100% of redraws) passes the clinical rules, but its images' gain was not measured."
    )


def test_unmeasured_fidelity_and_copies_are_said_to_be_absent():
    out = select({"a": _kids(0.05, 0.07, 0.05, 0.07)})
    row = out.clinical.table["a"]
    assert row.fidelity is None and row.copies is None and row.eligible
    assert out.measured == {"fidelity": False, "copies": False, "gains": False}
    assert out.verdict.startswith("Cannot decide: a (100% of redraws)")
    assert "recognisable" not in out.verdict


def test_rank_agreement_from_five_checkpoints():
    kids = {f"c{i}": _kids(0.05, 0.05 + 0.01 * i, 0.05, 0.05 + 0.01 * i) for i in range(1, 6)}
    fidelity = {c: {"AD": 0.8, "NON_AD": 0.5} for c in kids}
    gains = {f"c{i}": _gain(0.01 * i, 0.0, 0.02 * i) for i in range(1, 6)}
    out = _select(kids, fidelity, gains)
    assert out.agreement["clinical"] == pytest.approx(1.0)  # wider margins, larger gains


def test_table1_runs_its_controls_paired_by_seed():
    from polypsynth.evaluate import table1
    from polypsynth.evaluate.sets import Checkpoint

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 150)
    calls = []

    def run(acc, seed):
        r = np.random.default_rng(seed)
        pred = np.where(r.random(150) < acc, y_true, 1 - y_true)
        return ClassifierRun.judged(y_true, pred)

    def run_real(seed):
        calls.append(("real", seed))
        return run(0.65, seed)

    def run_augmented(ck, picks, seed, swap):
        calls.append((ck.name, {c: len(v) for c, v in picks.items()}, seed, swap))
        return run(0.5 if swap else 0.8, 100 + seed)

    def run_base(fold, seed):
        calls.append(("base", fold, seed))
        return run(0.55, 200 + 10 * fold + seed)

    cks = [Checkpoint(n, i, {"AD": list(range(30)), "NON_AD": list(range(20))}) for i, n in enumerate("ab")]
    plan = table1.Plan(seeds=3, base_seed=5, n_synthetic=30, folds=2, swap_control=["b"], min_gain=0.05)
    out = table1.run_table(cks, plan, run_real, run_augmented, run_base=run_base, control="ctl")
    assert [c for c in calls if c[0] == "real"] == [("real", s) for s in (5, 6, 7)]
    assert [c for c in calls if c[0] == "a"] == [("a", {"AD": 15, "NON_AD": 15}, s, False) for s in (5, 6, 7)]
    assert [c[3] for c in calls if c[0] == "b"] == [False] * 3 + [True] * 3
    assert [c for c in calls if c[0] == "base"] == [("base", f, s) for s in (5, 6, 7) for f in (0, 1)]
    assert out.augmented["a"].added == {"AD": 15, "NON_AD": 15}
    assert out.gains["a"].word == "helps" and out.gains["a"].min_gain == 0.05
    assert set(out.swapped) == {"b"} and out.swapped["b"].ci95[1] < 0
    # The control's gain: the whole split's classifier minus the mean of the fold classifiers, by seed and image.
    assert list(out.gains) == ["a", "b", "ctl"]
    base = {(f, s): run(0.55, 200 + 10 * f + s) for f in (0, 1) for s in (5, 6, 7)}
    real = {s: run(0.65, s) for s in (5, 6, 7)}

    def correct(r):
        return (r.y_pred == r.y_true).astype(float)

    diff = np.stack([correct(real[s]) - (correct(base[0, s]) + correct(base[1, s])) / 2 for s in (5, 6, 7)])
    from polypsynth.evaluate.uncertainty import interval

    assert out.gains["ctl"].mean == pytest.approx(interval(y_true, diff).mean)
    assert out.gains["ctl"].ci95 == pytest.approx(interval(y_true, diff).ci95)
    assert out.control_base.folds == 2 and out.control_base.seeds == 3


def test_a_negative_control_that_does_not_lose_makes_the_test_untrusted():
    """A gain that helps counts only when swapping the synthetic labels costs accuracy: a classifier
    that ignores the labels gains nothing from what the images say about pathology."""
    kids = {"a": _kids(0.05, 0.07, 0.05, 0.07), "ctl": _kids(0.05, 0.07, 0.05, 0.07)}
    fid = {n: {"AD": 0.8, "NON_AD": 0.6} for n in kids}
    gains = {"a": _gain(0.06, 0.03, 0.09), "ctl": _gain(0.05, 0.02, 0.08)}
    reads = _select(kids, fid, gains, control="ctl", negative={"a": _gain(-0.15, -0.25, -0.05)})
    assert reads.decision == "worth using"
    assert "Swapping the labels of a's images lowers accuracy (-0.150 [-0.250, -0.050] (3 seeds): harms" in (
        " ".join(reads.notes)
    )
    ignores = _select(kids, fid, gains, control="ctl", negative={"a": _gain(0.0, -0.03, 0.03)})
    assert ignores.decision == "cannot decide"
    assert ignores.verdict == (
        "Cannot decide: a passes the clinical rules and its images raise balanced accuracy, but the label-swapped "
        "control does not show that the classifier reads their labels."
    )
    assert "Swapping the AD and NON_AD labels of a's images does not clearly lower accuracy" in " ".join(
        ignores.notes
    )
    # Nor can "not worth using" rest on a classifier that ignores the labels.
    flat = {"a": _gain(-0.001, -0.01, 0.01), "ctl": _gain(0.05, 0.02, 0.08)}
    assert _select(kids, fid, flat, control="ctl", negative={"a": _gain(-0.15, -0.25, -0.05)}).decision == (
        "not worth using"
    )
    assert _select(kids, fid, flat, control="ctl", negative={"a": _gain(0.0, -0.03, 0.03)}).decision == (
        "cannot decide"
    )


def test_the_selection_is_written_as_plain_json_with_every_reading():
    """`Selection.to_dict` is what results.json and the report hold: plain JSON types, the
    table's rows, the gains with their words as strings, the controls when run."""
    import json

    kids = {"a": _kids(0.05, 0.07, 0.05, 0.07), "ctl": _kids(0.05, 0.07, 0.05, 0.07)}
    fid = {n: {"AD": 0.8, "NON_AD": 0.6} for n in kids}
    gains = {"a": _gain(0.06, 0.03, 0.09), "ctl": _gain(0.05, 0.02, 0.08)}
    chosen = _select(
        kids, fid, gains, control="ctl", negative={"a": _gain(-0.15, -0.25, -0.05)}, gains_by="x"
    )
    stored = json.loads(json.dumps(chosen.to_dict()))
    assert list(stored) == [
        "naive",
        "clinical",
        "min_gain",
        "measured",
        "control",
        "negative",
        "agreement",
        "decision",
        "verdict",
        "notes",
        "gains_by",
    ]
    assert stored["decision"] == chosen.decision == "worth using" and stored["gains_by"] == "x"
    assert stored["control"]["gain"]["word"] == "helps" and stored["negative"]["a"]["word"] == "harms"
    row = stored["clinical"]["table"]["a"]
    assert row["fidelity"]["AD"]["status"] == "undecided" and row["reasons"] == [] and row["eligible"] is True
    assert row["fidelity"]["AD"]["diff_ci95"] == list(chosen.clinical.table["a"].fidelity["AD"].diff_ci95)
    # Without controls or gains their keys are left out, as before.
    bare = select({"a": _kids(0.05, 0.07, 0.05, 0.07)}).to_dict()
    assert (
        "control" not in bare
        and "negative" not in bare
        and "agreement" not in bare
        and "gains_by" not in bare
    )
