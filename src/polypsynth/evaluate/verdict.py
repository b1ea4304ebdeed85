"""The verdict: "worth using", "not worth using" or "cannot decide", in one sentence, with notes.

- *worth using*: the clinical rule picks a checkpoint and its images *help* (uncertainty.Word: the
  gain's interval lies above 0 and reaches the minimum gain), and the label-swapped negative
  control loses accuracy (the classifier reads the synthetic labels).
- *not worth using*: every checkpoint copies its training images while held-out real images are
  not flagged (the copy check works on this data); or no checkpoint that does not copy earns more
  than *does not help*, *below the minimum* or *harms*, while the positive control *helps* (held-out
  real images added the same way show a gain, so the test split can see one) and the negative
  control *harms*. Without such controls a gain below the minimum says nothing against the images.
- *cannot decide*: everything else, with the reason.

The sentence names the decision and its main reason; the notes say the rest: each ineligible
checkpoint's reasons (which margin is below zero, which class is lost), the controls, and the naive
pick. The report puts a table of every checkpoint between them (tables.verdict_rows). It reads only
the selection (selection.select), so an evaluation and a published table (`polypsynth judge`) get
the same words."""

from __future__ import annotations

from dataclasses import dataclass, field

from polypsynth.evaluate.picks import ClinicalPick, ControlReading, Decision, NaivePick, RuleRow, Selection
from polypsynth.evaluate.uncertainty import Gain, Word, describe

MEANING = (
    "'Worth using' means: the checkpoint passes the clinical rules and adding its images to the real "
    "training data raised the balanced accuracy of the study's classifier on this test set, with a gain "
    "of at least the minimum among the values its 95% interval supports. It is not a clinical validation. "
    "A gain's word follows from its interval, 0 and the minimum gain: helps (above 0, reaching the "
    "minimum), below the minimum (above 0, wholly below it), does not help (holds 0, wholly below the "
    "minimum), harms (wholly below 0), cannot tell (holds 0 and the minimum; always from one seed whose "
    "variance was neither measured nor declared). Class fidelity is the recall of a classifier trained "
    "on real images (the judge), measured on synthetic images, not a pathologist's reading."
)
NO_GAIN = (Word.DOES_NOT_HELP, Word.HARMS, Word.BELOW_MINIMUM)


def _word(gain: Gain | None) -> Word | None:
    return gain.word if gain else None


def _probability(rule: NaivePick | ClinicalPick) -> str:
    p = rule.probability
    return f" ({p:.0%} of redraws)" if p is not None else ""


@dataclass
class _Reading:
    """What the verdict reads of one selection."""

    selection: Selection
    gains: dict[str, Gain]
    by: str
    names: list[str] = field(init=False)

    def __post_init__(self):
        control = self.selection.control
        self.names = [n for n in self.selection.clinical.table if not control or n != control.name]

    @property
    def table(self) -> dict[str, RuleRow]:
        return self.selection.clinical.table

    @property
    def control(self) -> ControlReading | None:
        return self.selection.control

    @property
    def min_gain(self) -> float:
        return self.selection.min_gain

    @property
    def negative(self) -> dict[str, Gain]:
        return self.selection.negative or {}

    def gain(self, name: str) -> str:
        return f"{describe(self.gains[name])}{self.by}" if name in self.gains else "not measured"

    def untrusted(self) -> list[str]:
        """Negative controls that did not lose accuracy."""
        return [n for n, g in self.negative.items() if _word(g) != Word.HARMS]


def _control_notes(r: _Reading) -> list[str]:
    control = r.control
    if control is None:
        return [
            f"No positive control was run: nothing shows that this test split could see a gain of "
            f"{r.min_gain:+.3f}, so gains below it say nothing against the images."
        ]
    out = []
    if control.eligible is False:
        out.append(
            f"Held-out real images fail the same rules ({'; '.join(control.reasons)}): on this data the rules "
            "cannot recognise a good generator, so failing them says little about the checkpoints."
        )
    gain = control.gain
    if gain is None:
        return out
    word = gain.word
    if word == Word.HARMS:
        out.append(
            f"Adding held-out real images lowers balanced accuracy ({describe(gain)}): this classifier does not "
            "gain from more real images of this kind (it overfits, or the training and test images differ), so "
            "this experiment cannot show what synthetic images add."
        )
    elif word != Word.HELPS:
        out.append(
            f"Adding held-out real images shows no gain of the minimum size either ({describe(gain)}): this test "
            f"split cannot show a gain of {r.min_gain:+.3f}."
        )
    else:
        out.append(f"Adding held-out real images helps ({describe(gain)}): the test split can see a gain.")
    return out


def _negative_notes(r: _Reading) -> list[str]:
    out = []
    for name, gain in r.negative.items():
        if _word(gain) == Word.HARMS:
            out.append(
                f"Swapping the labels of {name}'s images lowers accuracy ({describe(gain)}): the classifier reads them."
            )
        else:
            out.append(
                f"Swapping the AD and NON_AD labels of {name}'s images does not clearly lower accuracy "
                f"({describe(gain)}): the classifier is not shown to read the synthetic labels, so no gain or loss "
                "here is shown to come from what the images say about pathology."
            )
    return out


def _rule_notes(r: _Reading) -> list[str]:
    grouped: dict[str, list[str]] = {}  # checkpoints with the same reasons named together
    for n in r.names:
        if r.table[n].reasons:
            grouped.setdefault(", ".join(r.table[n].reasons), []).append(n)
    return [f"{', '.join(ns)}: {reason}." for reason, ns in grouped.items()]


def _decide(r: _Reading) -> tuple[Decision, str]:
    """(decision, sentence)."""
    sel, table, control = r.selection, r.table, r.control
    pick = sel.clinical.pick
    untrusted = r.untrusted()
    if pick and _word(r.gains.get(pick)) == Word.HELPS and not untrusted:
        fidelity = " and recognisable" if table[pick].fidelity else ""
        return "worth using", (
            f"Worth using: {pick}{_probability(sel.clinical)}; its synthetic classes stay apart{fidelity}, and its "
            f"images raise balanced accuracy: {r.gain(pick)}."
        )
    if r.names and all(table[n].copies is True for n in r.names):
        if control is not None and control.copies:
            return "cannot decide", (
                "Cannot decide: the copy check flags every checkpoint and the held-out real images alike, so it "
                "cannot tell copies from new images on this data."
            )
        return "not worth using", "Not worth using: every checkpoint reproduces its training images."
    usable = [n for n in r.names if not table[n].copies]
    powered = control is not None and _word(control.gain) == Word.HELPS
    if powered and not untrusted and r.gains and all(_word(r.gains.get(n)) in NO_GAIN for n in usable):
        return "not worth using", (
            f"Not worth using: no checkpoint's images raise balanced accuracy by {r.min_gain:+.3f} or more, while "
            "held-out real images do."
        )
    if pick and _word(r.gains.get(pick)) == Word.HELPS:
        return "cannot decide", (
            f"Cannot decide: {pick} passes the clinical rules and its images raise balanced accuracy, but the "
            f"label-swapped control does not show that the classifier reads their labels."
        )
    if pick:
        told = "was not measured" if not r.gains else f"is {r.gain(pick)}"
        return (
            "cannot decide",
            f"Cannot decide: {pick}{_probability(sel.clinical)} passes the clinical rules, but its images' gain {told}.",
        )
    return "cannot decide", "Cannot decide: no checkpoint passes the clinical rules."


def verdict(selection: Selection, gains: dict[str, Gain] | None) -> tuple[Decision, str, list[str]]:
    """(decision, sentence, notes) of a selection whose picks are made (module docstring)."""
    by = selection.gains_by
    r = _Reading(selection, gains or {}, f" ({by})" if by else "")
    decision, sentence = _decide(r)
    notes = _rule_notes(r)
    helping = [
        n
        for n in r.names
        if not r.table[n].eligible and not r.table[n].copies and _word(r.gains.get(n)) == Word.HELPS
    ]
    if helping:
        notes.append(f"Yet the images of {', '.join(helping)} clearly helped the classifier.")
    if r.gains:
        notes += _control_notes(r) + _negative_notes(r)
    naive = selection.naive
    notes.append(
        f"The lowest same-class KID, the rule the study warns against, would pick {naive.pick}{_probability(naive)}."
    )
    return decision, sentence, notes
