"""Checkpoint selection by two rules, and how each agrees with the augmentation gains.

- naive: the lowest same-class KID, mean of KID(syn AD, real AD) and KID(syn NON_AD, real NON_AD);
  the rule the study shows to mislead.
- clinical: the study's point: synthetic classes must stay apart. Margins
  m_AD = KID(syn AD, real NON_AD) - KID(syn AD, real AD) and
  m_NON_AD = KID(syn NON_AD, real AD) - KID(syn NON_AD, real NON_AD) must both be positive beyond
  their uncertainty (95% interval above zero) and the classifier trained on real data must
  recognise each synthetic class above chance (class fidelity > 0.5), and the checkpoint must not
  copy its training images (memorisation.py). Eligible checkpoints rank by
  the sum of their ranks in the smaller margin and in the balanced class fidelity.

A margin's standard error comes from a jackknife over all three image sets it involves (the
synthetic set is shared by its two KIDs, whose errors are therefore correlated). Given only Table
2's figures (a KID and its error each), it falls back to combining the two errors as if
independent, an approximation that can be off in either direction. A checkpoint whose margins are
neither clearly positive nor clearly negative is "undecided", and a verdict with no eligible
checkpoint but undecided ones says the experiment cannot decide. Rank agreement with the augmentation gains needs at least
MIN_RANKED checkpoints.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.96
MIN_RANKED = 5  # Spearman's rho from fewer points says next to nothing


def naive_scores(kids: dict[str, dict]) -> dict[str, float]:
    return {
        c: (k["syn_AD_vs_real_AD"]["mean"] + k["syn_NON_AD_vs_real_NON_AD"]["mean"]) / 2
        for c, k in kids.items()
    }


def _margin(k: dict, cls: str, other: str, same: str) -> tuple[float, float]:
    if f"margin_{cls}" in k:  # measured jointly (kid.kid_table)
        return k[f"margin_{cls}"]["mean"], k[f"margin_{cls}"]["se"]
    return k[other]["mean"] - k[same]["mean"], math.hypot(k[other]["se"], k[same]["se"])


def clinical_table(
    kids: dict[str, dict], fidelity: dict[str, dict], copies: dict[str, dict] | None = None
) -> dict[str, dict]:
    table = {}
    for c, k in kids.items():
        m_ad, se_ad = _margin(k, "AD", "syn_AD_vs_real_NON_AD", "syn_AD_vs_real_AD")
        m_non, se_non = _margin(k, "NON_AD", "syn_NON_AD_vs_real_AD", "syn_NON_AD_vs_real_NON_AD")
        lows = (m_ad - Z95 * se_ad, m_non - Z95 * se_non)
        highs = (m_ad + Z95 * se_ad, m_non + Z95 * se_non)
        apart = "apart" if min(lows) > 0 else ("not apart" if min(highs) < 0 else "undecided")
        fid = fidelity[c]
        copying = bool(copies and copies[c]["copies"])
        table[c] = {
            "margin_AD": m_ad,
            "margin_AD_se": se_ad,
            "margin_NON_AD": m_non,
            "margin_NON_AD_se": se_non,
            "min_margin": min(m_ad, m_non),
            "classes": apart,
            "fidelity_balanced": (fid["AD"] + fid["NON_AD"]) / 2,
            "copies": copying,
            "eligible": apart == "apart" and fid["AD"] > 0.5 and fid["NON_AD"] > 0.5 and not copying,
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
    power: dict | None = None,
    copies: dict[str, dict] | None = None,
) -> dict:
    """Both rules' picks; `gains` are augmentation gains per checkpoint, measured with `gains_by`;
    `power`: that classifier's gain from more real data (table1.power), which says whether a gain
    from synthetic data could have been seen at all; `copies`: per checkpoint, whether it copies its
    training images (memorisation.check), which makes it ineligible."""
    naive = naive_scores(kids)
    clinical = clinical_table(kids, fidelity, copies)
    naive_pick = min(naive, key=naive.__getitem__)
    eligible = [c for c, t in clinical.items() if t["eligible"]]
    clinical_pick = max(eligible, key=lambda c: clinical[c]["score"]) if eligible else None
    out: dict = {
        "naive": {"pick": naive_pick, "scores": naive},
        "clinical": {"pick": clinical_pick, "table": clinical},
    }
    if gains:
        common = [c for c in kids if c in gains]
        out["agreement"] = {}
        g = [gains[c]["mean"] for c in common]
        if len(common) < MIN_RANKED:
            out["agreement"]["note"] = (
                f"not computed: rank agreement needs at least {MIN_RANKED} checkpoints, {len(common)} evaluated"
            )
        elif len(set(g)) > 1:  # a rank correlation needs gains that differ
            from scipy.stats import spearmanr

            for rule, score in (
                ("naive", [-naive[c] for c in common]),
                ("clinical", [clinical[c]["score"] for c in common]),
            ):
                rho = spearmanr(score, g).statistic if len(set(score)) > 1 else float("nan")
                out["agreement"][rule] = None if np.isnan(rho) else float(rho)
    if power is not None:
        out["power"] = power
    out["verdict"] = verdict(out, gains, gains_by)
    return out


def _power_note(power: dict | None) -> str:
    if power is None or power["powered"]:
        return ""
    lo, hi = power["ci95"]
    return (
        f" Table 1 could not settle it either: its classifier gains no clear accuracy from doubling the real "
        f"training data ({power['mean']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})."
    )


def verdict(selection: dict, gains: dict[str, dict] | None, gains_by: str | None = None) -> str:
    naive, clinical = selection["naive"]["pick"], selection["clinical"]["pick"]
    lead = f"Lowest same-class KID picks {naive}; "
    if clinical is None:
        table = selection["clinical"]["table"]
        copying = [c for c, t in table.items() if t["copies"]]
        if copying:
            lead += (
                f"{len(copying)} checkpoint(s) ({', '.join(copying)}) reproduce training images more often "
                "than chance and are refused; "
            )
        undecided = [c for c, t in table.items() if t["classes"] == "undecided"]
        if undecided:
            return (
                lead
                + (
                    f"the experiment cannot decide: for {len(undecided)} of {len(table)} checkpoints "
                    f"({', '.join(undecided)}) the cross-class KID margins lie within their 95% uncertainty, "
                    "and no checkpoint shows both synthetic classes clearly apart and recognisable; more "
                    "synthetic and real images would narrow the margins."
                )
                + _power_note(selection.get("power"))
            )
        return lead + (
            "no checkpoint keeps both synthetic classes closer to their own real class than to the other "
            "and recognisable to a classifier trained on real data, so none is clinically worth using."
        )
    text = lead + f"the clinical rule picks {clinical}"
    if not (gains and clinical in gains):
        return text + " (augmentation not measured for it, so its clinical benefit is untested)."
    g = gains[clinical]
    lo, hi = g["ci95"]
    text += (
        f", whose images changed balanced accuracy by {g['mean']:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}) when "
        f"added to real training data{f' ({gains_by})' if gains_by else ''}: "
    )
    if lo > 0:
        return text + "clinically worth using."
    power = selection.get("power")
    if power is not None and not power["powered"]:
        plo, phi = power["ci95"]
        return text + (
            "the experiment cannot decide whether they help, since the same classifier shows no clear gain "
            f"from doubling its real training data either ({power['mean']:+.3f}, 95% CI {plo:+.3f} to "
            f"{phi:+.3f}); more real test images (or a harder task) are needed before this can be judged."
        )
    return text + "not shown to help, so not clinically worth using yet."
