"""What a checkpoint selection found (selection.py), typed until `Selection.to_dict`, the form
results.json and `polypsynth judge --json` hold; the verdict (verdict.py) reads it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, NamedTuple

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.uncertainty import Gain, Interval

Decision = Literal["worth using", "not worth using", "cannot decide"]
Status = Literal["kept", "lost", "undecided", "untestable"]  # a synthetic class's fidelity
Side = Literal["above zero", "below zero", "within its uncertainty"]  # a margin against 0 (95%)
Apart = Literal["apart", "not apart", "undecided"]  # both margins together


@dataclass(frozen=True)
class Judge:
    """The classifier trained on real images that names the class of each judged image: its recall
    of each class on the real test images (the fidelity threshold) and the test images per class;
    from an evaluation also what it is and its balanced accuracy there."""

    recall: dict[str, float]
    images: dict[str, int]
    kind: str | None = None
    real: Interval | None = None

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "real": self.real.to_dict() if self.real else None,
            "recall": self.recall,
            "images": self.images,
        }


class FidelityInput(NamedTuple):
    """What the fidelity rule reads of one judged set: the share its judge names as each class,
    its images per class, and that judge."""

    shares: dict[str, float]
    images: dict[str, int]
    judge: Judge


@dataclass(frozen=True)
class FidelityTest:
    """One synthetic class's fidelity (`share` of `images`) against the judge's `recall`: the 95%
    intervals of that recall and of the difference, and the status (selection.py's docstring)."""

    share: float
    images: int
    recall: float
    recall_ci95: tuple[float, float]
    diff_ci95: tuple[float, float]
    status: Status

    def to_dict(self) -> dict:
        return {**asdict(self), "recall_ci95": list(self.recall_ci95), "diff_ci95": list(self.diff_ci95)}


def lost_classes(tests: dict[str, FidelityTest] | None) -> list[str]:
    """The classes whose fidelity is clearly lost (none when fidelity was not measured)."""
    return [c for c in CLASSES if tests and tests[c].status == "lost"]


@dataclass(frozen=True)
class RuleRow:
    """The clinical rule's reading of one judged set: both margins and their sum (the shift-free
    margin) with standard errors, where each margin lies against 0, the class fidelity tests (None:
    not measured), whether it copies (None: not checked), its eligibility and, if not, why."""

    margin_AD: float
    margin_AD_se: float
    margin_NON_AD: float
    margin_NON_AD_se: float
    min_margin: float
    shift_free: float
    shift_free_se: float
    classes: Apart
    margins: dict[str, Side]
    fidelity: dict[str, FidelityTest] | None
    fidelity_mean: float | None
    copies: bool | None
    eligible: bool
    reasons: list[str] = field(default_factory=list)

    def lost(self) -> list[str]:
        return lost_classes(self.fidelity)

    def to_dict(self) -> dict:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        fidelity = {c: t.to_dict() for c, t in self.fidelity.items()} if self.fidelity else None
        return out | {"margins": dict(self.margins), "fidelity": fidelity, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class NaivePick:
    """The lowest same-class KID's pick, every checkpoint's score, and the share of redraws it keeps."""

    pick: str
    scores: dict[str, float]
    probability: float | None


@dataclass(frozen=True)
class ClinicalPick:
    """The clinical rule's pick (None: no checkpoint eligible), the share of redraws it keeps, the
    eligible checkpoints best first, the tie rule, and every judged set's row."""

    pick: str | None
    probability: float | None
    eligible: list[str]
    ties: str
    table: dict[str, RuleRow]

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("pick", "probability", "eligible", "ties")}
        return out | {"table": {n: row.to_dict() for n, row in self.table.items()}}


@dataclass(frozen=True)
class ControlReading:
    """The positive control as the rules and Table 1 read it (None where its KIDs or gain are not known)."""

    name: str
    eligible: bool | None
    reasons: list[str]
    copies: bool | None
    gain: Gain | None

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("name", "eligible", "reasons", "copies")}
        return out | {"gain": self.gain.to_dict() if self.gain else None}


@dataclass(frozen=True)
class Selection:
    """Both rules' picks, what was measured, the controls, the rank agreement of the rules with
    the gains, and the verdict: a decision, one sentence and notes (verdict.py)."""

    naive: NaivePick
    clinical: ClinicalPick
    min_gain: float
    measured: dict[str, bool]
    control: ControlReading | None = None
    negative: dict[str, Gain] | None = None  # the label-swapped controls' gains
    agreement: dict | None = None
    decision: Decision = "cannot decide"
    verdict: str = ""
    notes: list[str] = field(default_factory=list)
    gains_by: str | None = None  # the classifier whose gains were read

    def to_dict(self) -> dict:
        out: dict = {
            "naive": asdict(self.naive),
            "clinical": self.clinical.to_dict(),
            "min_gain": self.min_gain,
            "measured": self.measured,
        }
        if self.control is not None:
            out["control"] = self.control.to_dict()
        if self.negative is not None:
            out["negative"] = {n: g.to_dict() for n, g in self.negative.items()}
        if self.agreement is not None:
            out["agreement"] = self.agreement
        out |= {"decision": self.decision, "verdict": self.verdict, "notes": self.notes}
        if self.gains_by is not None:
            out["gains_by"] = self.gains_by
        return out
