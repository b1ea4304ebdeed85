"""Checkpoint selection by two rules, and how each agrees with the augmentation gains.

- naive: the lowest same-class KID, mean of KID(syn AD, real AD) and KID(syn NON_AD, real NON_AD);
  the rule the study shows to mislead.
- clinical: the study's point: synthetic classes must stay apart. Margins
  m_AD = KID(syn AD, real NON_AD) - KID(syn AD, real AD) and
  m_NON_AD = KID(syn NON_AD, real AD) - KID(syn NON_AD, real NON_AD) must both be positive and the
  classifier trained on real data must recognise each synthetic class above chance (class
  fidelity > 0.5). Eligible checkpoints rank by the sum of their ranks in the smaller margin and
  in the balanced class fidelity.
"""

from __future__ import annotations

import numpy as np


def naive_scores(kids: dict[str, dict]) -> dict[str, float]:
    return {
        c: (k["syn_AD_vs_real_AD"]["mean"] + k["syn_NON_AD_vs_real_NON_AD"]["mean"]) / 2
        for c, k in kids.items()
    }


def clinical_table(kids: dict[str, dict], fidelity: dict[str, dict]) -> dict[str, dict]:
    table = {}
    for c, k in kids.items():
        m_ad = k["syn_AD_vs_real_NON_AD"]["mean"] - k["syn_AD_vs_real_AD"]["mean"]
        m_non = k["syn_NON_AD_vs_real_AD"]["mean"] - k["syn_NON_AD_vs_real_NON_AD"]["mean"]
        fid = fidelity[c]
        table[c] = {
            "margin_AD": m_ad,
            "margin_NON_AD": m_non,
            "min_margin": min(m_ad, m_non),
            "fidelity_balanced": (fid["AD"] + fid["NON_AD"]) / 2,
            "eligible": m_ad > 0 and m_non > 0 and fid["AD"] > 0.5 and fid["NON_AD"] > 0.5,
        }
    margins = {c: t["min_margin"] for c, t in table.items()}
    fids = {c: t["fidelity_balanced"] for c, t in table.items()}
    rank_m, rank_f = _ranks(margins), _ranks(fids)
    for c, t in table.items():
        t["score"] = rank_m[c] + rank_f[c]  # higher is better
    return table


def _ranks(values: dict[str, float]) -> dict[str, float]:
    from scipy.stats import rankdata

    names = list(values)
    ranks = rankdata([values[n] for n in names])  # 1 = smallest
    return {n: float(r) for n, r in zip(names, ranks, strict=True)}


def select(
    kids: dict[str, dict],
    fidelity: dict[str, dict],
    gains: dict[str, dict] | None = None,
    gains_by: str | None = None,
) -> dict:
    """Both rules' picks; `gains` are augmentation gains per checkpoint, measured with `gains_by`."""
    naive = naive_scores(kids)
    clinical = clinical_table(kids, fidelity)
    naive_pick = min(naive, key=naive.get)
    eligible = [c for c, t in clinical.items() if t["eligible"]]
    clinical_pick = max(eligible, key=lambda c: clinical[c]["score"]) if eligible else None
    out = {
        "naive": {"pick": naive_pick, "scores": naive},
        "clinical": {"pick": clinical_pick, "table": clinical},
    }
    if gains:
        common = [c for c in kids if c in gains]
        out["agreement"] = {}
        g = [gains[c]["mean"] for c in common]
        if len(common) >= 3 and len(set(g)) > 1:  # a rank correlation needs gains that differ
            from scipy.stats import spearmanr

            for rule, score in (
                ("naive", [-naive[c] for c in common]),
                ("clinical", [clinical[c]["score"] for c in common]),
            ):
                rho = spearmanr(score, g).statistic if len(set(score)) > 1 else float("nan")
                out["agreement"][rule] = None if np.isnan(rho) else float(rho)
    out["verdict"] = verdict(out, gains, gains_by)
    return out


def verdict(selection: dict, gains: dict[str, dict] | None, gains_by: str | None = None) -> str:
    naive, clinical = selection["naive"]["pick"], selection["clinical"]["pick"]
    lead = f"Lowest same-class KID picks {naive}; "
    if clinical is None:
        return lead + (
            "no checkpoint keeps both synthetic classes closer to their own real class than to the other "
            "and recognisable to a classifier trained on real data, so none is clinically worth using."
        )
    text = lead + f"the clinical rule picks {clinical}"
    if gains and clinical in gains:
        g = gains[clinical]
        lo, hi = g.get("ci95", (np.nan, np.nan))
        worth = g["mean"] > 0 and lo > 0
        text += (
            f", whose images changed balanced accuracy by {g['mean']:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}) when added "
            f"to real training data{f' ({gains_by})' if gains_by else ''}: {'clinically worth using' if worth else 'not shown to help, so not clinically worth using yet'}."
        )
    else:
        text += " (augmentation not measured for it, so its clinical benefit is untested)."
    return text
