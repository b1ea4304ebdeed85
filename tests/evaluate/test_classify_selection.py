import numpy as np
import pytest

from polypsynth.evaluate.classify import bootstrap_interval, classification_metrics, gain_interval, summarise
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


def _kids(same_ad, cross_ad, same_non, cross_non):
    return {
        "syn_AD_vs_real_AD": {"mean": same_ad},
        "syn_AD_vs_real_NON_AD": {"mean": cross_ad},
        "syn_NON_AD_vs_real_NON_AD": {"mean": same_non},
        "syn_NON_AD_vs_real_AD": {"mean": cross_non},
    }


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
    assert out["agreement"]["clinical"] == pytest.approx(1.0) and out["agreement"]["naive"] < 0
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
