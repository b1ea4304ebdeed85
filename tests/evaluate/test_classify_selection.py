import numpy as np
import pytest

from polypsynth.evaluate.classify import (
    bootstrap_interval,
    classification_metrics,
    gain_interval,
    hierarchical_interval,
    summarise,
)
from polypsynth.evaluate.selection import select


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


def test_bootstrap_interval_contains_the_point_value():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 200)
    y_pred = np.where(rng.random(200) < 0.8, y_true, 1 - y_true)
    point = classification_metrics(y_true, y_pred)["balanced_accuracy"]
    lo, hi = bootstrap_interval(y_true, y_pred)
    assert lo < point < hi and hi - lo < 0.2


def test_summary_and_paired_gain():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, 100)

    def run(acc, seed):
        r = np.random.default_rng(seed)
        pred = np.where(r.random(100) < acc, y_true, 1 - y_true)
        return {"metrics": classification_metrics(y_true, pred), "y_true": y_true, "y_pred": pred}

    real = [run(0.7, s) for s in range(3)]
    better = [run(0.9, 10 + s) for s in range(3)]
    s = summarise(real)
    assert s["seeds"] == 3 and s["balanced_accuracy"]["std"] > 0
    assert np.sum(s["confusion"]) == 300
    g = gain_interval(real, better)
    assert g["mean"] > 0.1 and g["ci95"][0] > 0  # clearly positive
    assert g["ci95"][0] <= g["mean"] <= g["ci95"][1]


def _kids(same_ad, cross_ad, same_non, cross_non, se=0.002):
    return {
        "syn_AD_vs_real_AD": {"mean": same_ad, "se": se},
        "syn_AD_vs_real_NON_AD": {"mean": cross_ad, "se": se},
        "syn_NON_AD_vs_real_NON_AD": {"mean": same_non, "se": se},
        "syn_NON_AD_vs_real_AD": {"mean": cross_non, "se": se},
    }


def _simulated_runs(rng, n_images, seed_accuracies):
    """Runs of one test set: each seed's classifier is right on an image with its own probability."""
    y_true = rng.integers(0, 2, n_images)
    runs = []
    for acc in seed_accuracies:
        pred = np.where(rng.random(n_images) < acc, y_true, 1 - y_true)
        runs.append({"metrics": classification_metrics(y_true, pred), "y_true": y_true, "y_pred": pred})
    return runs


def test_hierarchical_interval_has_the_width_of_fresh_experiments():
    """Independent reference: the spread of the seed-averaged balanced accuracy over freshly drawn
    test sets and seeds (seed accuracies vary around 0.75). The interval from one experiment must
    match it; pooling seeds x images as independent is too narrow."""
    rng = np.random.default_rng(7)

    def seed_accuracies():
        return np.clip(rng.normal(0.75, 0.06, 3), 0, 1)

    fresh = [
        np.mean([r["metrics"]["balanced_accuracy"] for r in _simulated_runs(rng, 120, seed_accuracies())])
        for _ in range(400)
    ]
    true_width = 3.92 * np.std(fresh)
    widths, pooled = [], []
    for _ in range(30):
        runs = _simulated_runs(rng, 120, seed_accuracies())
        lo, hi = hierarchical_interval(runs[0]["y_true"], [r["y_pred"] for r in runs], n=400)
        widths.append(hi - lo)
        plo, phi = bootstrap_interval(
            np.concatenate([r["y_true"] for r in runs]), np.concatenate([r["y_pred"] for r in runs]), n=400
        )
        pooled.append(phi - plo)
    assert np.mean(widths) == pytest.approx(true_width, rel=0.3)
    assert np.mean(pooled) < 0.75 * true_width  # what the interval was before: too narrow
    # One seed: the hierarchical interval is the bootstrap over images.
    one = _simulated_runs(rng, 80, [0.8])
    assert hierarchical_interval(one[0]["y_true"], [one[0]["y_pred"]]) == bootstrap_interval(
        one[0]["y_true"], one[0]["y_pred"]
    )


def test_naive_and_clinical_rules_disagree_like_in_the_study():
    # step-8k has the best same-class KID, but its classes collapse onto each other (Table 2's point).
    kids = {
        "step-2k": _kids(0.079, 0.118, 0.090, 0.110),
        "step-4k": _kids(0.069, 0.106, 0.085, 0.090),
        "step-8k": _kids(0.069, 0.070, 0.081, 0.060),
    }
    fidelity = {
        "step-2k": {"AD": 0.8, "NON_AD": 0.7},
        "step-4k": {"AD": 0.7, "NON_AD": 0.6},
        "step-8k": {"AD": 0.6, "NON_AD": 0.4},
    }
    gains = {
        "step-2k": {"mean": 0.02, "ci95": [0.005, 0.04]},
        "step-4k": {"mean": -0.01, "ci95": [-0.03, 0.01]},
        "step-8k": {"mean": -0.04, "ci95": [-0.07, -0.01]},
    }
    out = select(kids, fidelity, gains)
    assert out["naive"]["pick"] == "step-8k"
    assert out["clinical"]["pick"] == "step-2k"
    assert out["clinical"]["table"]["step-8k"]["eligible"] is False  # NON_AD not recognised
    assert out["agreement"] == {
        "note": "not computed: rank agreement needs at least 5 checkpoints, 3 evaluated"
    }
    assert out["verdict"] == (
        "Lowest same-class KID picks step-8k; the clinical rule picks step-2k, whose images changed balanced "
        "accuracy by +0.020 (95% CI +0.005 to +0.040) when added to real training data: clinically worth using."
    )


def test_the_studys_table_2_has_no_eligible_checkpoint():
    """In the study, synthetic NON_AD sits closer to real AD than to real NON_AD at every
    iteration: the clinical rule accepts none, matching its finding that augmentation hurt."""
    study = {
        "1k": _kids(0.073, 0.111, 0.094, 0.061),
        "2k": _kids(0.079, 0.118, 0.100, 0.067),
        "4k": _kids(0.069, 0.106, 0.085, 0.057),
        "8k": _kids(0.069, 0.105, 0.081, 0.061),
    }
    fidelity = {k: {"AD": 0.8, "NON_AD": 0.6} for k in study}
    out = select(study, fidelity)
    assert out["naive"]["pick"] == "8k" and out["clinical"]["pick"] is None
    assert all(t["margin_NON_AD"] < 0 < t["margin_AD"] for t in out["clinical"]["table"].values())


def test_fast_balanced_accuracy_equals_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    from polypsynth.evaluate.classify import balanced_accuracy_rows

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 2, (50, 40))
    y_pred = rng.integers(0, 2, (50, 40))
    fast = balanced_accuracy_rows(y_true, y_pred)
    assert np.allclose(fast, [balanced_accuracy_score(t, p) for t, p in zip(y_true, y_pred, strict=True)])


def test_no_eligible_checkpoint():
    kids = {"a": _kids(0.05, 0.04, 0.05, 0.06)}
    out = select(kids, {"a": {"AD": 0.9, "NON_AD": 0.9}})
    assert out["clinical"]["pick"] is None and "none is clinically worth using" in out["verdict"]


def test_rank_agreement_from_five_checkpoints():
    kids = {f"c{i}": _kids(0.05, 0.05 + 0.01 * i, 0.05, 0.05 + 0.01 * i) for i in range(1, 6)}
    fidelity = {c: {"AD": 0.8, "NON_AD": 0.8} for c in kids}
    gains = {f"c{i}": {"mean": 0.01 * i, "ci95": (0.0, 0.02 * i)} for i in range(1, 6)}
    out = select(kids, fidelity, gains)
    assert out["agreement"]["clinical"] == pytest.approx(1.0)  # wider margins, larger gains


def test_margins_within_their_uncertainty_cannot_decide():
    # Margins of +0.001 with standard errors of 0.003 per KID: positive, but not beyond the noise.
    kids = {"a": _kids(0.050, 0.051, 0.050, 0.051, se=0.003), "b": _kids(0.05, 0.04, 0.05, 0.04, se=0.001)}
    out = select(kids, {"a": {"AD": 0.9, "NON_AD": 0.9}, "b": {"AD": 0.9, "NON_AD": 0.9}})
    table = out["clinical"]["table"]
    assert table["a"]["classes"] == "undecided" and not table["a"]["eligible"]
    assert table["a"]["margin_AD_se"] == pytest.approx(0.003 * np.sqrt(2))
    assert table["b"]["classes"] == "not apart"
    assert out["clinical"]["pick"] is None
    assert "the experiment cannot decide: for 1 of 2 checkpoints (a)" in out["verdict"]
    blind = {"mean": -0.01, "ci95": [-0.09, 0.07], "powered": False}
    fid = {"a": {"AD": 0.9, "NON_AD": 0.9}, "b": {"AD": 0.9, "NON_AD": 0.9}}
    assert select(kids, fid, power=blind)["verdict"].endswith(
        "Table 1 could not settle it either: its classifier gains no clear accuracy from doubling the real "
        "training data (-0.010, 95% CI -0.090 to +0.070)."
    )
    # The same margins measured ten times more precisely are clearly apart.
    precise = {"a": _kids(0.050, 0.051, 0.050, 0.051, se=0.0003)}
    assert select(precise, {"a": {"AD": 0.9, "NON_AD": 0.9}})["clinical"]["pick"] == "a"


def test_jointly_measured_margins_are_used_when_present():
    kids = {"a": _kids(0.050, 0.051, 0.050, 0.051, se=0.003)}
    kids["a"]["margin_AD"] = {"mean": 0.001, "se": 0.0002}  # from kid.kid_table
    kids["a"]["margin_NON_AD"] = {"mean": 0.001, "se": 0.0002}
    out = select(kids, {"a": {"AD": 0.9, "NON_AD": 0.9}})
    assert out["clinical"]["table"]["a"]["margin_AD_se"] == 0.0002
    assert out["clinical"]["pick"] == "a"


def test_a_gain_without_power_cannot_decide():
    """The pick's gain is not clear; whether that condemns the images depends on the power control:
    a classifier that cannot see the gain from twice the real data cannot judge synthetic data."""
    kids = {"a": _kids(0.05, 0.07, 0.05, 0.07)}
    fidelity = {"a": {"AD": 0.9, "NON_AD": 0.8}}
    gains = {"a": {"mean": 0.01, "ci95": [-0.05, 0.07]}}
    blind = {"mean": 0.004, "ci95": [-0.06, 0.07], "powered": False}
    out = select(kids, fidelity, gains, "EfficientNet", power=blind)
    assert out["power"] == blind
    assert out["verdict"].endswith(
        "the experiment cannot decide whether they help, since the same classifier shows no clear gain "
        "from doubling its real training data either (+0.004, 95% CI -0.060 to +0.070); more real test "
        "images (or a harder task) are needed before this can be judged."
    )
    seeing = {"mean": 0.08, "ci95": [0.03, 0.13], "powered": True}
    assert select(kids, fidelity, gains, "EfficientNet", power=seeing)["verdict"].endswith(
        "(EfficientNet): not shown to help, so not clinically worth using yet."
    )
    # A clear gain needs no power control to be believed.
    clear = {"a": {"mean": 0.06, "ci95": [0.02, 0.10]}}
    assert select(kids, fidelity, clear, power=blind)["verdict"].endswith("clinically worth using.")


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

    def run_real(picks, seed):
        calls.append(("real", None if picks is None else {c: len(v) for c, v in picks.items()}, seed))
        return run(0.8 if picks is None else 0.65, seed)  # the second half of the real data helps

    def run_augmented(ck, picks, seed, swap):
        calls.append((ck.name, {c: len(v) for c, v in picks.items()}, seed, swap))
        return run(0.5 if swap else 0.8, 100 + seed)

    cks = [Checkpoint(n, i, {"AD": list(range(30)), "NON_AD": list(range(20))}) for i, n in enumerate("ab")]
    out = table1.run_table(
        cks, {"AD": 40, "NON_AD": 21}, 3, 5, 30, run_real, run_augmented, swap_control=["b"]
    )
    assert ("real", {"AD": 20, "NON_AD": 10}, 6) in calls  # a stratified half, seeded per run
    assert [c for c in calls if c[0] == "a"] == [("a", {"AD": 15, "NON_AD": 15}, s, False) for s in (5, 6, 7)]
    assert [c[3] for c in calls if c[0] == "b"] == [False] * 3 + [True] * 3
    assert set(out["controls"]["swapped"]) == {"b"} and out["controls"]["swapped"]["b"]["ci95"][1] < 0
    power = table1.power(out)
    assert power["powered"] and power["mean"] == pytest.approx(
        out["real"]["balanced_accuracy"]["mean"] - out["controls"]["real_half"]["balanced_accuracy"]["mean"]
    )
    halves = [table1.real_half({"AD": 40, "NON_AD": 21}, s) for s in (1, 2)]
    assert not np.array_equal(halves[0]["AD"], halves[1]["AD"])
