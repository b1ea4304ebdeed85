"""Checkpoint selection by two rules, a positive control, and a verdict that can say "cannot decide".

- naive: the lowest same-class KID, mean of KID(syn AD, real AD) and KID(syn NON_AD, real NON_AD);
  the rule the study warns against (shown, never followed).
- clinical: the study's point: synthetic classes must stay apart. A checkpoint is eligible when
  1. its margins m_AD = KID(syn AD, real NON_AD) - KID(syn AD, real AD) and
     m_NON_AD = KID(syn NON_AD, real AD) - KID(syn NON_AD, real NON_AD) are both positive beyond
     their uncertainty (95% interval above zero);
  2. no synthetic class is clearly less recognisable than real images of that class: the judge (a
     classifier trained on real data) names a share of each synthetic class as that class (class
     fidelity); its recall on the real test images of the class is the threshold, and the class is
     "lost" only when the 95% interval of fidelity - recall (Newcombe, from the two Wilson
     intervals) lies below zero. A perfect generator's fidelity equals that recall, whatever the
     judge's skill; a fixed 0.5 rejected one with probability 0.40 at the study's NON_AD recall.
     Where the judge's own recall is not clearly above chance, fidelity cannot tell that class
     ("untestable") and is noted, not held against the checkpoint;
  3. it does not copy its training images (memorisation.py).
  Eligible checkpoints rank by the sum of their ranks in the smaller margin and in the mean fidelity.

The positive control (held-out real images, sets.CONTROL) is judged by the same rules. When it is
not eligible, the rules cannot recognise a good generator on this data, and the verdict says so
instead of blaming the checkpoints. Its augmentation gain is the power control: adding real images
the classifier has not seen should help; if that cannot be shown, no synthetic gain can be.

A checkpoint is worth using when it is eligible and its images *help* (uncertainty.py: the gain's
95% interval above 0). The verdict is "not worth using" only when every checkpoint that does not
copy *does not help* (interval below the margin delta) while the held-out real images do help (a
classifier that gains nothing from new real images says nothing by gaining nothing from synthetic
ones); otherwise it says it cannot decide, and why.
"""

from __future__ import annotations

import math

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.kid import KidTable
from polypsynth.evaluate.uncertainty import MARGIN, describe

Z95 = 1.96
MIN_RANKED = 5  # Spearman's rho from fewer points says next to nothing
CHANCE = 0.5
MEANING = (
    "'Worth using' means: the checkpoint passes the clinical rules and adding its images to the real "
    "training data clearly raised the balanced accuracy of the study's classifier on this test set. It is "
    "not a clinical validation. 'Cannot tell' means the interval of a gain holds both zero and gains "
    "worth having (the margin); more test images narrow it. Class fidelity is the recall of a classifier "
    "trained on real images (the judge), measured on synthetic images, not a pathologist's reading."
)


def naive_scores(kids: dict[str, KidTable]) -> dict[str, float]:
    return {
        c: (k["syn_AD_vs_real_AD"].mean + k["syn_NON_AD_vs_real_NON_AD"].mean) / 2 for c, k in kids.items()
    }


def _margin(k: KidTable, cls: str, other: str, same: str) -> tuple[float, float]:
    if f"margin_{cls}" in k:  # measured jointly (kid.kid_table)
        return k[f"margin_{cls}"].mean, k[f"margin_{cls}"].se
    return k[other].mean - k[same].mean, math.hypot(k[other].se, k[same].se)


def _wilson(share: float, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(round(share * n), n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def fidelity_test(share: float, n: int, recall: float, m: int) -> dict:
    """Synthetic class fidelity (`share` of n images) against the judge's recall on m real test
    images of that class: the Newcombe 95% interval of their difference, and the status."""
    f_lo, f_hi = _wilson(share, n)
    r_lo, r_hi = _wilson(recall, m)
    diff = share - recall
    lo = diff - math.hypot(share - f_lo, r_hi - recall)
    hi = diff + math.hypot(f_hi - share, recall - r_lo)
    status = "lost" if hi < 0 else ("untestable" if r_lo <= CHANCE else "kept")
    return {
        "share": share,
        "images": n,
        "recall": recall,
        "recall_ci95": [r_lo, r_hi],
        "diff_ci95": [lo, hi],
        "status": status,
    }


def _rule_row(k: KidTable, fid: dict, judge: dict, counts: dict, copying: bool) -> dict:
    m_ad, se_ad = _margin(k, "AD", "syn_AD_vs_real_NON_AD", "syn_AD_vs_real_AD")
    m_non, se_non = _margin(k, "NON_AD", "syn_NON_AD_vs_real_AD", "syn_NON_AD_vs_real_NON_AD")
    lows = (m_ad - Z95 * se_ad, m_non - Z95 * se_non)
    highs = (m_ad + Z95 * se_ad, m_non + Z95 * se_non)
    apart = "apart" if min(lows) > 0 else ("not apart" if min(highs) < 0 else "undecided")
    tests = {c: fidelity_test(fid[c], counts[c], judge["recall"][c], judge["images"][c]) for c in CLASSES}
    lost = [c for c in CLASSES if tests[c]["status"] == "lost"]
    return {
        "margin_AD": m_ad,
        "margin_AD_se": se_ad,
        "margin_NON_AD": m_non,
        "margin_NON_AD_se": se_non,
        "min_margin": min(m_ad, m_non),
        "classes": apart,
        "fidelity": tests,
        "fidelity_mean": float(np.mean([fid[c] for c in CLASSES])),
        "copies": copying,
        "eligible": apart == "apart" and not lost and not copying,
    }


def reasons(row: dict) -> list[str]:
    """Why a row is not eligible, in words."""
    out = []
    if row["classes"] == "not apart":
        out.append("its classes sit closer to the other real class than to their own (margins below zero)")
    elif row["classes"] == "undecided":
        out.append("its cross-class margins lie within their 95% uncertainty")
    lost = [c for c in CLASSES if row["fidelity"][c]["status"] == "lost"]
    if lost:
        out.append(
            f"the judge recognises its {' and '.join(lost)} clearly less often than real {' and '.join(lost)}"
        )
    if row["copies"]:
        out.append("it reproduces training images more often than chance")
    return out


def clinical_table(
    kids: dict[str, KidTable],
    fidelity: dict[str, dict],
    judge: dict,
    counts: dict[str, dict],
    copies: dict[str, dict] | None = None,
) -> dict[str, dict]:
    table = {
        c: _rule_row(k, fidelity[c], judge, counts[c], bool(copies and copies[c]["copies"]))
        for c, k in kids.items()
    }
    rank_m = _ranks({c: t["min_margin"] for c, t in table.items()})
    rank_f = _ranks({c: t["fidelity_mean"] for c, t in table.items()})
    for c, t in table.items():
        t["score"] = rank_m[c] + rank_f[c]  # higher is better
    return table


def _ranks(values: dict[str, float]) -> dict[str, float]:
    from scipy.stats import rankdata

    names = list(values)
    ranks = rankdata([values[n] for n in names])  # 1 = smallest
    return {n: float(r) for n, r in zip(names, ranks, strict=True)}


def select(
    kids: dict[str, KidTable],
    fidelity: dict[str, dict],
    judge: dict,
    counts: dict[str, dict],
    gains: dict[str, dict] | None = None,
    gains_by: str | None = None,
    copies: dict[str, dict] | None = None,
    control: str | None = None,
    margin: float = MARGIN,
) -> dict:
    """Both rules' picks and the verdict. `fidelity`: per set, class -> share the judge names that
    class; `judge`: {"recall": class -> recall on real test images, "images": class -> count};
    `counts`: per set, class -> images; `gains`: augmentation gains (uncertainty.gain_interval),
    measured with `gains_by`; `copies`: memorisation per set; `control`: the name of the positive
    control among the sets (judged like the rest, never picked)."""
    clinical = clinical_table(kids, fidelity, judge, counts, copies)
    names = [n for n in kids if n != control]
    naive = {n: s for n, s in naive_scores(kids).items() if n != control}
    eligible = [n for n in names if clinical[n]["eligible"]]
    out: dict = {
        "naive": {"pick": min(naive, key=naive.__getitem__), "scores": naive},
        "clinical": {
            "pick": max(eligible, key=lambda n: clinical[n]["score"]) if eligible else None,
            "table": clinical,
        },
        "margin": margin,
    }
    if control is not None:
        out["control"] = {
            "name": control,
            "eligible": clinical[control]["eligible"],
            "reasons": reasons(clinical[control]),
            "gain": (gains or {}).get(control),
        }
    if gains:
        out["agreement"] = _agreement(names, naive, clinical, gains)
    out["decision"], out["verdict"] = verdict(out, gains, gains_by)
    return out


def _agreement(names, naive, clinical, gains) -> dict:
    common = [n for n in names if n in gains]
    if len(common) < MIN_RANKED:
        return {
            "note": f"not computed: rank agreement needs at least {MIN_RANKED} checkpoints, {len(common)} evaluated"
        }
    g = [gains[n]["mean"] for n in common]
    out: dict = {}
    if len(set(g)) > 1:  # a rank correlation needs gains that differ
        from scipy.stats import spearmanr

        for rule, score in (
            ("naive", [-naive[n] for n in common]),
            ("clinical", [clinical[n]["score"] for n in common]),
        ):
            rho = spearmanr(score, g).statistic if len(set(score)) > 1 else float("nan")
            out[rule] = None if np.isnan(rho) else float(rho)
    return out


def verdict(selection: dict, gains: dict[str, dict] | None, gains_by: str | None = None) -> tuple[str, str]:
    """(decision, text): decision is "worth using", "not worth using" or "cannot decide"."""
    table = selection["clinical"]["table"]
    control = selection.get("control")
    names = [n for n in table if not control or n != control["name"]]
    pick, naive = selection["clinical"]["pick"], selection["naive"]["pick"]
    by = f" ({gains_by})" if gains_by else ""
    tail = f" The lowest same-class KID, the rule the study warns against, would pick {naive}."
    if pick and gains and gains[pick]["word"] == "helps":
        return "worth using", (
            f"Worth using: {pick}. Its synthetic classes stay apart and recognisable, and adding its images to the "
            f"real training data changed balanced accuracy by {describe(gains[pick])}{by}." + tail
        )
    usable = [n for n in names if not table[n]["copies"]]
    if not usable:
        return "not worth using", "Not worth using: every checkpoint reproduces its training images." + tail
    powered = control is None or (control["gain"] is not None and control["gain"]["word"] == "helps")
    if powered and gains and all(n in gains and gains[n]["word"] == "does not help" for n in usable):
        margin = selection["margin"]
        return "not worth using", (
            f"Not worth using: no checkpoint's images raise balanced accuracy by {margin:.2f} or more (every "
            f"95% upper bound is below +{margin:.2f}{by})." + tail
        )
    parts = ["Cannot decide."]
    if pick and not gains:
        parts.append(
            f"{pick} passes the clinical rules; augmentation was not measured, so whether its images help is untested."
        )
    elif pick and gains:
        parts.append(
            f"{pick} passes the clinical rules, but its images' gain is {describe(gains[pick])}{by}."
        )
    else:
        why = {n: reasons(table[n]) for n in names}
        parts.append(
            "No checkpoint passes the clinical rules: "
            + "; ".join(f"{n}: {', '.join(r)}" for n, r in why.items())
            + "."
        )
        helping = [n for n in usable if gains and n in gains and gains[n]["word"] == "helps"]
        if helping:
            parts.append(f"Yet the images of {', '.join(helping)} clearly helped the classifier.")
    if control is not None:
        if not control["eligible"]:
            parts.append(
                f"Held-out real images fail the same rules ({'; '.join(control['reasons'])}): on this data the rules "
                "cannot recognise a good generator, so failing them says little about the checkpoints."
            )
        gain = control["gain"]
        if gain is not None and gain["word"] != "helps":
            parts.append(
                f"Adding held-out real images shows no clear gain either ({describe(gain)}): this test split "
                "cannot show a gain of that size."
            )
    return "cannot decide", " ".join(parts) + tail
