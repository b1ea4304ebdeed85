"""The verdict: "worth using", "not worth using" or "cannot decide", and the sentences that say why.

- *worth using*: the clinical rule picks a checkpoint and its images *help* (uncertainty.Word: the
  gain's interval lies above 0 and reaches the minimum gain).
- *not worth using*: every checkpoint copies its training images while held-out real images are
  not flagged (the copy check works on this data); or no checkpoint that does not copy earns more
  than *does not help*, *below the minimum* or *harms*, while the positive control *helps*: held-out
  real images added the same way show a gain, so the test split can see one. Without such a control
  a gain below the minimum says nothing against the images.
- *cannot decide*: everything else, with the reason: no eligible checkpoint (each one's reasons),
  an untested or undecided gain (with its seeds and minimum detectable effect), a control that fails
  the rules, shows no gain, harms (the classifier does not gain from more real images of this kind),
  or is absent.

It reads only the selection's dict (selection.select), so an evaluation and a published table
(`polypsynth judge`) get the same sentences."""

from __future__ import annotations

from polypsynth.evaluate.uncertainty import Word, describe

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


def _word(gain: dict | None) -> Word | None:
    return Word(gain["word"]) if gain else None


def _probability(rule: dict) -> str:
    p = rule.get("probability")
    return f" (the pick in {p:.0%} of redraws from the KIDs' errors)" if p is not None else ""


def _control_sentences(control: dict | None, min_gain: float) -> list[str]:
    if control is None:
        return [
            f"No positive control was run: nothing shows that this test split could see a gain of "
            f"{min_gain:+.3f}, so gains below it say nothing against the images."
        ]
    out = []
    if control["eligible"] is False:
        out.append(
            f"Held-out real images fail the same rules ({'; '.join(control['reasons'])}): on this data the rules "
            "cannot recognise a good generator, so failing them says little about the checkpoints."
        )
    gain, word = control["gain"], _word(control["gain"])
    if word == Word.HARMS:
        out.append(
            f"Adding held-out real images lowers balanced accuracy ({describe(gain)}): this classifier does not "
            "gain from more real images of this kind (it overfits, or the training and test images differ), so "
            "this experiment cannot show what synthetic images add."
        )
    elif gain is not None and word != Word.HELPS:
        out.append(
            f"Adding held-out real images shows no gain of the minimum size either ({describe(gain)}): this test "
            f"split cannot show a gain of {min_gain:+.3f}."
        )
    return out


def _no_pick_sentences(table: dict, names: list[str], gains: dict | None) -> list[str]:
    grouped: dict[str, list[str]] = {}  # checkpoints with the same reasons named together
    for n in names:
        grouped.setdefault(", ".join(table[n]["reasons"]), []).append(n)
    out = [
        "No checkpoint passes the clinical rules: "
        + "; ".join(f"{', '.join(ns)}: {r}" for r, ns in grouped.items())
        + "."
    ]
    helping = [n for n in names if not table[n]["copies"] and _word((gains or {}).get(n)) == Word.HELPS]
    if helping:
        out.append(f"Yet the images of {', '.join(helping)} clearly helped the classifier.")
    return out


def _copy_verdict(selection: dict, names: list[str], tail: str) -> tuple[str, str] | None:
    """The verdict when every checkpoint copies, read after the control: when the control's real
    images are flagged too, the copy check cannot tell copies from new images here."""
    table, control = selection["clinical"]["table"], selection.get("control")
    if any(table[n]["copies"] is not True for n in names):
        return None
    if control is not None and control["copies"]:
        return "cannot decide", (
            "Cannot decide. Every checkpoint is flagged as copying its training images, but so are held-out "
            "real images: the copy check cannot tell copies from new images on this data." + tail
        )
    return "not worth using", "Not worth using: every checkpoint reproduces its training images." + tail


def verdict(selection: dict, gains: dict[str, dict] | None, gains_by: str | None = None) -> tuple[str, str]:
    """(decision, text) from select's dict (module docstring)."""
    table = selection["clinical"]["table"]
    control = selection.get("control")
    names = [n for n in table if not control or n != control["name"]]
    pick, naive = selection["clinical"]["pick"], selection["naive"]["pick"]
    min_gain = selection["min_gain"]
    by = f" ({gains_by})" if gains_by else ""
    tail = f" The lowest same-class KID, the rule the study warns against, would pick {naive}{_probability(selection['naive'])}."
    if pick and _word((gains or {}).get(pick)) == Word.HELPS:
        fidelity = " and recognisable" if table[pick]["fidelity"] else ""
        return "worth using", (
            f"Worth using: {pick}{_probability(selection['clinical'])}. Its synthetic classes stay apart{fidelity}, "
            f"and adding its images to the real training data changed balanced accuracy by "
            f"{describe(gains[pick])}{by}." + tail  # type: ignore[index]
        )
    copied = _copy_verdict(selection, names, tail)
    if copied:
        return copied
    usable = [n for n in names if not table[n]["copies"]]
    powered = control is not None and _word(control["gain"]) == Word.HELPS
    if powered and gains and all(_word(gains.get(n)) in NO_GAIN for n in usable):
        return "not worth using", (
            f"Not worth using: no checkpoint's images raise balanced accuracy by {min_gain:+.3f} or more "
            f"({'; '.join(f'{n}: {describe(gains[n])}' for n in usable)}{by}), while adding held-out real "
            f"images does ({describe(control['gain'])})." + tail  # type: ignore[index]
        )
    parts = ["Cannot decide."]
    if pick and not gains:
        parts.append(
            f"{pick}{_probability(selection['clinical'])} passes the clinical rules; augmentation was not "
            "measured, so whether its images help is untested."
        )
    elif pick and gains:
        parts.append(
            f"{pick}{_probability(selection['clinical'])} passes the clinical rules, but its images' gain is "
            f"{describe(gains[pick]) if pick in gains else 'not measured'}{by}."
        )
    else:
        parts += _no_pick_sentences(table, names, gains)
    if gains:
        parts += _control_sentences(control, min_gain)
    return "cannot decide", " ".join(parts) + tail
