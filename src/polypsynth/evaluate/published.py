"""`polypsynth judge`: a published KID table (and Table 1) re-judged by the code `evaluate` uses.

The file (YAML):

    kid:
      error: std            # std: a spread over subsets (the study's "(std)"); se: a standard error
      subset_size: 1000     # optional, with images: turns a std into a standard error
      images: 2000          # optional: the smallest set's image count
      checkpoints:
        8k: {syn_AD_vs_real_AD: [0.069, 0.002], syn_AD_vs_real_NON_AD: [0.105, 0.004],
             syn_NON_AD_vs_real_NON_AD: [0.081, 0.003], syn_NON_AD_vs_real_AD: [0.061, 0.002]}
      control: {...}        # optional: held-out real images' four KIDs
      scale: [0.05, 0.002]  # optional: KID(real AD, real NON_AD)
    table1:                 # optional; one confusion matrix per seed; true class: [predicted AD, predicted NON_AD]
      real: [{AD: [64, 13], NON_AD: [17, 19]}]
      augmented: {8k: [{AD: [62, 15], NON_AD: [19, 17]}]}
      control: [...]        # optional: the same classifier with held-out real images added
      swapped: {8k: [...]}  # optional: with 8k's images, AD and NON_AD labels swapped (negative control)
    fidelity:               # optional: the judge's recall on real test images and its shares
      judge: {recall: {AD: 0.83, NON_AD: 0.53}, images: {AD: 77, NON_AD: 36}}
      images: {AD: 48, NON_AD: 48}
      checkpoints: {8k: {AD: 0.8, NON_AD: 0.6}}
    copies: {8k: false}     # optional: whether a copy check flagged each checkpoint

A std over subsets of size s drawn from N images varies like an estimate from s images, shrunk by
the finite population (1 - s/N): the standard error of the estimate from all N is about
std * sqrt(s / (N - s)). Given `subset_size` and `images` it is converted so; otherwise the std is
taken as the standard error, which overstates it whenever the subsets are at most half of the
smaller set (torchmetrics' default of 1000 needs sets of 2000). Margins of published KIDs take
their errors as independent. Gains come from confusion matrices through pairing.py: without
per-image predictions the interval covers every pairing the matrices allow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from polypsynth.data.records import CLASSES
from polypsynth.errors import EvalError
from polypsynth.evaluate import pairing, selection
from polypsynth.evaluate.kid import COMPARISONS, KidResult, KidTable
from polypsynth.evaluate.picks import FidelityInput, Judge, Selection
from polypsynth.evaluate.uncertainty import MIN_GAIN, Gain, paired_gain

CONTROL = "held-out real"
KEYS = [key for key, *_ in COMPARISONS]


@dataclass
class Published:
    """A published table read and checked: KIDs as KidTables (control among them when given), the
    scale, gains from Table 1, fidelity inputs and copies (None when absent), and what was assumed."""

    kids: dict[str, KidTable]
    scale: KidResult | None
    gains: dict[str, Gain]
    fidelity: dict[str, FidelityInput] | None
    copies: dict[str, bool] | None
    notes: list[str] = field(default_factory=list)
    negative: dict[str, Gain] = field(default_factory=dict)  # label-swapped controls' gains


def _pair(value, where: str) -> tuple[float, float]:
    if not (
        isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
    ):
        raise EvalError(f"{where}: expected [mean, error] (two numbers), got {value!r}")
    mean, err = float(value[0]), float(value[1])
    if not math.isfinite(mean) or not math.isfinite(err) or err < 0:
        raise EvalError(f"{where}: the error must be a finite number >= 0, got {value!r}")
    return mean, err


def _mapping(value, where: str, keys: list[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise EvalError(f"{where}: expected a mapping, got {type(value).__name__}")
    if keys is not None:
        missing = [k for k in keys if k not in value]
        unknown = [k for k in value if k not in keys]
        if missing or unknown:
            raise EvalError(
                f"{where}: expected keys {', '.join(keys)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(map(str, unknown))}" if unknown else "")
            )
    return value


def _to_se(kid: dict) -> tuple[float, str]:
    """The factor that turns the file's errors into standard errors, and how it was decided."""
    error = kid.get("error")
    if error == "se":
        return 1.0, "KID errors given as standard errors."
    if error != "std":
        raise EvalError(
            f"kid.error: expected 'std' (a spread over subsets) or 'se' (a standard error), got {error!r}"
        )
    s, n = kid.get("subset_size"), kid.get("images")
    if s is None or n is None:
        return 1.0, (
            "KID errors are a spread over subsets (std); without kid.subset_size and kid.images they are taken as "
            "standard errors, which overstates them when the subsets are at most half of the smaller set."
        )
    if not (isinstance(s, int) and isinstance(n, int) and 0 < s < n):
        raise EvalError(f"kid.subset_size must be a whole number below kid.images, got {s!r} and {n!r}")
    factor = math.sqrt(s / (n - s))
    return factor, f"KID stds over subsets of {s} of {n} images turned into standard errors (x {factor:.3f})."


def _kid_tables(kid: dict, factor: float, method: str) -> dict[str, KidTable]:
    sets = dict(_mapping(kid.get("checkpoints"), "kid.checkpoints"))
    if not sets:
        raise EvalError("kid.checkpoints: expected at least one checkpoint")
    if "control" in kid:
        sets[CONTROL] = kid["control"]
    out: dict[str, KidTable] = {}
    for name, row in sets.items():
        where = f"kid.checkpoints.{name}" if name != CONTROL else "kid.control"
        row = _mapping(row, where, KEYS)
        table: KidTable = {}
        for key in KEYS:
            m, e = _pair(row[key], f"{where}.{key}")
            table[key] = KidResult(m, e * factor, method, 0, 1, 0, 0)
        out[str(name)] = table
    return out


def _confusions(runs, where: str) -> list[dict]:
    if not isinstance(runs, list) or not runs:
        raise EvalError(f"{where}: expected a list of confusion matrices, one per seed")
    out = []
    for i, cm in enumerate(runs):
        cm = _mapping(cm, f"{where}[{i}]", list(CLASSES))
        for c in CLASSES:
            row = cm[c]
            if not (
                isinstance(row, list) and len(row) == 2 and all(isinstance(v, int) and v >= 0 for v in row)
            ):
                raise EvalError(
                    f"{where}[{i}].{c}: expected [predicted AD, predicted NON_AD] counts, got {row!r}"
                )
            if sum(row) == 0:
                raise EvalError(f"{where}[{i}].{c}: the test split needs images of {c}")
        out.append(cm)
    return out


def _gains(table1: dict, min_gain: float, seed_sd: float | None) -> tuple[dict[str, Gain], dict[str, Gain]]:
    """Every augmented row's gain (the control's too) and every swapped row's gain, each against
    the real row, paired by seed."""
    real = _confusions(table1.get("real"), "table1.real")
    pairing.labels_of(real, "table1.real")  # a test split every gain can be read on
    added = {
        str(n): (f"table1.augmented.{n}", r)
        for n, r in _mapping(table1.get("augmented", {}), "table1.augmented").items()
    }
    if "control" in table1:
        added[CONTROL] = ("table1.control", table1["control"])
    swapped = {
        str(n): (f"table1.swapped.{n}", r)
        for n, r in _mapping(table1.get("swapped", {}), "table1.swapped").items()
    }

    def gains(rows) -> dict[str, Gain]:
        out = {}
        for name, (where, runs) in rows.items():
            y, diff = pairing.gain_scores(real, _confusions(runs, where))
            out[name] = paired_gain(y, diff, min_gain, seed_sd)
        return out

    return gains(added), gains(swapped)


def _fidelity(section: dict, names: list[str]) -> dict[str, FidelityInput]:
    section = _mapping(section, "fidelity", ["judge", "images", "checkpoints"])
    judge = _mapping(section["judge"], "fidelity.judge", ["recall", "images"])
    shares = _mapping(section["checkpoints"], "fidelity.checkpoints")
    unknown = [n for n in shares if str(n) not in names]
    if unknown:
        raise EvalError(f"fidelity.checkpoints: {', '.join(map(str, unknown))} not among kid.checkpoints")
    counts = {str(n): _mapping(section["images"], "fidelity.images", list(CLASSES)) for n in shares}
    return selection.fidelity_inputs(
        {str(n): s for n, s in shares.items()}, Judge(judge["recall"], judge["images"]), counts
    )


def read(path: str | Path, min_gain: float = MIN_GAIN, seed_sd: float | None = None) -> Published:
    """The table at `path`, checked: every error names the key and what was expected."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EvalError(f"cannot read the table {path}: {exc}") from exc
    doc = _mapping(doc, str(path))
    unknown = [k for k in doc if k not in ("kid", "table1", "fidelity", "copies")]
    if unknown:
        raise EvalError(
            f"{path}: unknown section(s) {', '.join(map(str, unknown))}; expected kid, table1, fidelity, copies"
        )
    kid = _mapping(doc.get("kid"), "kid")
    factor, note = _to_se(kid)
    kids = _kid_tables(
        kid,
        factor,
        "published" + (" std, as a standard error" if factor == 1.0 and kid["error"] == "std" else ""),
    )
    scale = None
    if "scale" in kid:
        m, e = _pair(kid["scale"], "kid.scale")
        scale = KidResult(m, e * factor, "published", 0, 1, 0, 0)
    notes = [note]
    gains: dict[str, Gain] = {}
    negative: dict[str, Gain] = {}
    if "table1" in doc:
        table1 = _mapping(doc["table1"], "table1")
        unknown = [k for k in table1 if k not in ("real", "augmented", "control", "swapped")]
        if unknown:
            raise EvalError(
                f"table1: unknown key(s) {', '.join(map(str, unknown))}; expected real, augmented, control, swapped"
            )
        gains, negative = _gains(table1, min_gain, seed_sd)
        missing = [n for n in [*gains, *negative] if n not in kids and n != CONTROL]
        if missing:
            raise EvalError(f"table1: {', '.join(missing)} not among kid.checkpoints")
        notes.append(
            "Gains from confusion matrices: each interval covers every pairing of the images they allow."
        )
    else:
        notes.append("No Table 1: augmentation not measured.")
    names = [n for n in kids if n != CONTROL]
    fidelity = _fidelity(doc["fidelity"], names) if "fidelity" in doc else None
    copies = (
        {str(n): bool(v) for n, v in _mapping(doc["copies"], "copies").items()} if "copies" in doc else None
    )
    notes.append(
        "Class fidelity "
        + ("given." if fidelity else "not given: the clinical rule reads the margins alone.")
    )
    notes.append("Copies " + ("given." if copies else "not checked."))
    return Published(kids, scale, gains, fidelity, copies, notes, negative)


def judge(published: Published, min_gain: float = MIN_GAIN, seed: int = 0) -> Selection:
    """select() on the published figures: the same rules, picks, gains and verdict as `evaluate`."""
    control = CONTROL if CONTROL in published.kids or CONTROL in published.gains else None
    return selection.select(
        published.kids,
        fidelity=published.fidelity,
        gains=published.gains or None,
        copies=published.copies,
        control=control,
        negative=published.negative or None,
        min_gain=min_gain,
        seed=seed,
    )


def summary(published: Published, chosen: Selection) -> dict:
    """The `--json` answer."""
    return {
        "naive_pick": chosen.naive.pick,
        "clinical_pick": chosen.clinical.pick,
        "pick_probability": {"naive": chosen.naive.probability, "clinical": chosen.clinical.probability},
        "decision": chosen.decision,
        "verdict": chosen.verdict,
        "reasons": chosen.notes,
        "gains": {
            name: {
                "word": str(g.word),
                "interval": list(g.ci95),
                "mean": g.mean,
                "mde": g.mde,
                "seeds": g.seeds,
                "seed_variance": g.seed_variance,
            }
            for name, g in published.gains.items()
        },
        "notes": published.notes,
    }
