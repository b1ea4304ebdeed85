"""Checkpoint selection by two rules, each pick with the probability that it is the best.

- naive: the lowest same-class KID, mean of KID(syn AD, real AD) and KID(syn NON_AD, real NON_AD);
  the rule the study warns against (shown, never followed).
- clinical: the study's point: synthetic classes must stay apart. A checkpoint is eligible when
  1. its margins m_AD = KID(syn AD, real NON_AD) - KID(syn AD, real AD) and
     m_NON_AD = KID(syn NON_AD, real AD) - KID(syn NON_AD, real NON_AD) are both positive beyond
     their uncertainty (95% interval above zero);
  2. no synthetic class is clearly less recognisable than real images of that class (class
     fidelity): the judge (a classifier trained on real data) names a share of each synthetic class
     as that class; its recall of that class on the real test images is the threshold, and the class
     is "lost" when the 95% interval of fidelity - recall (Newcombe, from two Wilson intervals) lies
     below zero, "kept" when it excludes a loss of more than FIDELITY_TOLERANCE, "undecided"
     otherwise. Only a judge with skill can tell: when the 95% interval of its Youden's J (recall
     AD + recall NON_AD - 1) on the real test images reaches 0, every class is "untestable" (a judge
     that names nearly everything AD recalls AD at 0.9 without telling the classes apart, and would
     "keep" junk AD images);
  3. it does not copy its training images (memorisation.py).
  Fidelity and copies may be unmeasured (a published table): the row then says so and the rule
  reads the margins alone.
  The pick is the eligible checkpoint with the largest smaller margin; ties go to the higher mean
  fidelity, then to the earlier checkpoint. Ineligible checkpoints and the control take no part.

Each pick carries the share of redraws in which it stays the pick: every KID (or margin) redrawn
from a normal with its standard error, independently (the checkpoints share their real reference,
so this treats their errors as uncorrelated), 10,000 times, among the same candidates.

The verdict (verdict.py) reads the picks, the gains (uncertainty.py) and the positive control."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.kid import OTHER, KidTable
from polypsynth.evaluate.picks import (
    Apart,
    ClinicalPick,
    ControlReading,
    FidelityInput,
    FidelityTest,
    Judge,
    NaivePick,
    RuleRow,
    Selection,
    Side,
    Status,
    lost_classes,
)
from polypsynth.evaluate.uncertainty import MIN_GAIN, Gain
from polypsynth.evaluate.verdict import verdict

Z95 = 1.959963984540054
MIN_RANKED = 5  # Spearman's rho from fewer points says next to nothing
FIDELITY_TOLERANCE = 0.10  # a loss of recognisability smaller than this is not worth flagging
REDRAWS = 10_000
TIES = "ties go to the higher mean fidelity, then to the earlier checkpoint"


def naive_scores(kids: dict[str, KidTable]) -> dict[str, float]:
    return {
        c: (k["syn_AD_vs_real_AD"].mean + k["syn_NON_AD_vs_real_NON_AD"].mean) / 2 for c, k in kids.items()
    }


def _margin(k: KidTable, cls: str) -> tuple[float, float]:
    if f"margin_{cls}" in k:  # measured jointly (kid.kid_table)
        return k[f"margin_{cls}"].mean, k[f"margin_{cls}"].se
    other, same = k[f"syn_{cls}_vs_real_{OTHER[cls]}"], k[f"syn_{cls}_vs_real_{cls}"]
    return other.mean - same.mean, math.hypot(other.se, same.se)


def _shift_free(k: KidTable) -> tuple[float, float]:
    if "shift_free" in k:
        return k["shift_free"].mean, k["shift_free"].se
    (m_ad, _), (m_non, _) = _margin(k, "AD"), _margin(k, "NON_AD")
    ses = [k[key].se for key in k if key.startswith("syn_")]  # four KIDs taken as independent
    return m_ad + m_non, float(np.sqrt(np.sum(np.square(ses))))


def _wilson(share: float, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(round(share * n), n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def judge_skill(recall: dict[str, float], images: dict[str, int]) -> dict:
    """Youden's J of a judge on the real test images (recall AD + recall NON_AD - 1; `images`: test
    images per class) with its 95% interval (Newcombe's method for a sum, from the two Wilson
    intervals): shown when it excludes 0."""
    bounds = {c: _wilson(recall[c], images[c]) for c in CLASSES}
    j = sum(recall[c] for c in CLASSES) - 1
    lo = j - math.hypot(*[recall[c] - bounds[c][0] for c in CLASSES])
    hi = j + math.hypot(*[bounds[c][1] - recall[c] for c in CLASSES])
    return {"youden": j, "ci95": [lo, hi], "shown": lo > 0}


def fidelity_test(share: float, n: int, recall: float, m: int, skilled: bool = True) -> FidelityTest:
    """Synthetic class fidelity (`share` of n images) against the judge's recall on m real test
    images of that class: the Newcombe 95% interval of their difference, and the status (module
    docstring); `skilled`: whether the judge's skill is shown (judge_skill)."""
    f_lo, f_hi = _wilson(share, n)
    r_lo, r_hi = _wilson(recall, m)
    diff = share - recall
    lo = diff - math.hypot(share - f_lo, r_hi - recall)
    hi = diff + math.hypot(f_hi - share, recall - r_lo)
    status: Status
    if not skilled:
        status = "untestable"
    elif hi < 0:
        status = "lost"
    elif lo > -FIDELITY_TOLERANCE:
        status = "kept"
    else:
        status = "undecided"
    return FidelityTest(share, n, recall, (r_lo, r_hi), (lo, hi), status)


def _fidelity(entry: FidelityInput | None) -> dict[str, FidelityTest] | None:
    """Per class fidelity tests of one set, None when not measured."""
    if entry is None:
        return None
    judge = entry.judge
    skilled = judge_skill(judge.recall, judge.images)["shown"]
    return {
        c: fidelity_test(entry.shares[c], entry.images[c], judge.recall[c], judge.images[c], skilled)
        for c in CLASSES
    }


def _rule_row(k: KidTable, fidelity: FidelityInput | None, copying: bool | None) -> RuleRow:
    (m_ad, se_ad), (m_non, se_non) = _margin(k, "AD"), _margin(k, "NON_AD")
    shift, shift_se = _shift_free(k)
    sides: dict[str, Side] = {
        c: "above zero"
        if m - Z95 * se > 0
        else ("below zero" if m + Z95 * se < 0 else "within its uncertainty")
        for c, (m, se) in zip(CLASSES, ((m_ad, se_ad), (m_non, se_non)), strict=True)
    }
    below = [c for c in CLASSES if sides[c] == "below zero"]
    apart: Apart = (
        "not apart" if below else ("apart" if all(v == "above zero" for v in sides.values()) else "undecided")
    )
    tests = _fidelity(fidelity)
    lost = lost_classes(tests)
    row = RuleRow(
        margin_AD=m_ad,
        margin_AD_se=se_ad,
        margin_NON_AD=m_non,
        margin_NON_AD_se=se_non,
        min_margin=min(m_ad, m_non),
        shift_free=shift,
        shift_free_se=shift_se,
        classes=apart,
        margins=sides,
        fidelity=tests,
        fidelity_mean=float(np.mean([fidelity.shares[c] for c in CLASSES])) if fidelity else None,
        copies=copying,
        eligible=apart == "apart" and not lost and not copying,
    )
    return replace(row, reasons=reasons(row))


def reasons(row: RuleRow) -> list[str]:
    """Why a row is not eligible, in words."""
    out = []
    sides = row.margins
    for c in CLASSES:
        if sides[c] == "below zero":
            out.append(
                f"its synthetic {c} sits closer to real {OTHER[c]} than to real {c} ({c} margin below zero)"
            )
    within = [c for c in CLASSES if sides[c] == "within its uncertainty"]
    if within and row.classes == "undecided":
        which = " and ".join(within)
        out.append(f"its {which} margin{'s lie' if len(within) > 1 else ' lies'} within the 95% uncertainty")
    lost = row.lost()
    if lost:
        out.append(
            f"the judge recognises its {' and '.join(lost)} clearly less often than real {' and '.join(lost)}"
        )
    if row.copies:
        out.append("it reproduces training images more often than its reference rate")
    return out


def clinical_table(
    kids: dict[str, KidTable],
    fidelity: dict[str, FidelityInput] | None,
    copies: dict[str, bool] | None,
) -> dict[str, RuleRow]:
    """The clinical rule's row of every set; `fidelity`: per set (fidelity_inputs), None when not
    measured; `copies`: per set whether it copies, None when not checked."""
    return {
        name: _rule_row(
            k,
            fidelity.get(name) if fidelity else None,
            bool(copies[name]) if copies and name in copies else None,
        )
        for name, k in kids.items()
    }


def fidelity_inputs(
    shares: dict[str, dict[str, float]],
    judge: Judge,
    counts: dict[str, dict[str, int]],
    judges: dict[str, Judge | None] | None = None,
) -> dict[str, FidelityInput]:
    """What the fidelity rule reads of each set: the shares the judge names as each class, the
    images per class, and the judge (`judges`: a set's own judge, e.g. the control's fold judges)."""
    return {
        name: FidelityInput(shares[name], counts[name], (judges or {}).get(name) or judge) for name in shares
    }


def _clinical_order(names: list[str], table: dict[str, RuleRow]) -> list[str]:
    """Best first: the larger smaller margin, then the higher mean fidelity, then the earlier one."""
    position = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (-table[n].min_margin, -(table[n].fidelity_mean or 0.0), position[n]))


def _draw(rng, mean_se: list[tuple[float, float]]) -> np.ndarray:
    """(REDRAWS, len) normal draws around each (mean, se)."""
    means, ses = np.array(mean_se, float).T
    return means + ses * rng.standard_normal((REDRAWS, len(means)))


def pick_probabilities(
    kids: dict[str, KidTable], naive: list[str], eligible: list[str], seed: int = 0
) -> dict:
    """Share of redraws from the KIDs' errors in which each rule's pick stays its pick, among the
    same candidates (`naive`: every checkpoint; `eligible`: the clinical rule's)."""
    rng = np.random.default_rng(seed)
    out: dict[str, float | None] = {"naive": None, "clinical": None}
    if naive:
        same = [(kids[n]["syn_AD_vs_real_AD"].mean, kids[n]["syn_AD_vs_real_AD"].se) for n in naive]
        same_non = [
            (kids[n]["syn_NON_AD_vs_real_NON_AD"].mean, kids[n]["syn_NON_AD_vs_real_NON_AD"].se)
            for n in naive
        ]
        scores = (_draw(rng, same) + _draw(rng, same_non)) / 2
        point = np.argmin(list(naive_scores({n: kids[n] for n in naive}).values()))
        out["naive"] = float(np.mean(scores.argmin(1) == point))
    if eligible:
        margins = [
            np.minimum(
                _draw(rng, [_margin(kids[n], "AD")])[:, 0], _draw(rng, [_margin(kids[n], "NON_AD")])[:, 0]
            )
            for n in eligible
        ]
        out["clinical"] = float(np.mean(np.stack(margins, 1).argmax(1) == 0))  # eligible[0] is the pick
    return out


def select(
    kids: dict[str, KidTable],
    *,
    fidelity: dict[str, FidelityInput] | None = None,
    gains: dict[str, Gain] | None = None,
    gains_by: str | None = None,
    copies: dict[str, bool] | None = None,
    control: str | None = None,
    negative: dict[str, Gain] | None = None,
    min_gain: float = MIN_GAIN,
    seed: int = 0,
) -> Selection:
    """Both rules' picks, their probabilities and the verdict. `kids`: per judged set (checkpoints
    in order, the positive control `control` among them: judged like the rest, never picked);
    `fidelity`: fidelity_inputs, None when not measured; `gains`: augmentation gains
    (table1.gain_interval) measured with `gains_by`; `copies`: per set whether it copies, None when
    not checked; `negative`: the label-swapped controls' gains (checkpoint -> gain); `min_gain`: the
    smallest balanced-accuracy gain worth having. The verdict is a decision, one sentence and notes
    (verdict.py)."""
    table = clinical_table(kids, fidelity, copies)
    names = [n for n in kids if n != control]
    naive = naive_scores({n: kids[n] for n in names})
    eligible = _clinical_order([n for n in names if table[n].eligible], table)
    chances = pick_probabilities(kids, names, eligible, seed)
    reading = None
    if control is not None:  # judged by the rules when its KIDs are known (a table may give only its gain)
        row = table.get(control)
        reading = ControlReading(
            name=control,
            eligible=row.eligible if row else None,
            reasons=row.reasons if row else [],
            copies=row.copies if row else None,
            gain=(gains or {}).get(control),
        )
    chosen = Selection(
        naive=NaivePick(min(naive, key=naive.__getitem__), naive, chances["naive"]),
        clinical=ClinicalPick(eligible[0] if eligible else None, chances["clinical"], eligible, TIES, table),
        min_gain=min_gain,
        measured={"fidelity": fidelity is not None, "copies": copies is not None, "gains": bool(gains)},
        control=reading,
        negative=negative,
        agreement=_agreement(names, naive, table, gains) if gains else None,
        gains_by=gains_by,
    )
    decision, sentence, notes = verdict(chosen, gains)
    return replace(chosen, decision=decision, verdict=sentence, notes=notes)


def _agreement(
    names: list[str], naive: dict[str, float], table: dict[str, RuleRow], gains: dict[str, Gain]
) -> dict:
    common = [n for n in names if n in gains]
    if len(common) < MIN_RANKED:
        return {
            "note": f"not computed: rank agreement needs at least {MIN_RANKED} checkpoints, {len(common)} evaluated"
        }
    g = [gains[n].mean for n in common]
    out: dict = {}
    if len(set(g)) > 1:  # a rank correlation needs gains that differ
        from scipy.stats import spearmanr

        for rule, score in (
            ("naive", [-naive[n] for n in common]),
            ("clinical", [table[n].min_margin for n in common]),
        ):
            rho = spearmanr(score, g).statistic if len(set(score)) > 1 else float("nan")
            out[rule] = None if np.isnan(rho) else float(rho)
    return out
