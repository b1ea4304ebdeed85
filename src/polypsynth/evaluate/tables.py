"""The report's tables as rows of strings (Table 1 with its controls, Table 2, the t-SNE numbers,
memorisation, selection), shared by report.md and index.html."""

from __future__ import annotations

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.kid import COMPARISONS
from polypsynth.evaluate.memorisation import status
from polypsynth.evaluate.selection import judge_skill
from polypsynth.evaluate.uncertainty import describe

TITLES = {c.key: c.title for c in COMPARISONS}


def markdown(rows: list[list[str]]) -> str:
    """Rows (the first the header) as a markdown table."""
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _fmt(stat: dict) -> str:
    """Mean (spread over seeds); the mean alone from one seed."""
    return f"{stat['mean']:.4f}" + (f" ({stat['std']:.4f})" if stat.get("std") is not None else "")


def set_label(results: dict, name: str) -> str:
    """A judged set's row label: the positive control says what it is."""
    return f"{name} (positive control)" if name == results.get("control", {}).get("name") else name


def experiments(results: dict) -> list[tuple[str, dict]]:
    """The augmentation experiments in the results: the study's fine-tuned EfficientNet, then the probe."""
    out = [(results["classification"].get("classifier", "EfficientNet"), results["classification"])]
    if results.get("probe"):
        out.append(("Inception probe", results["probe"]))
    return out


def table1(results: dict) -> list[list[str]]:
    """Rows like the study's Table 1: per-class precision / recall / F1 and balanced accuracy, for
    each classifier (the study's EfficientNet-B0, and the Inception linear probe when computed)."""
    rows = [
        ["Training images"]
        + [f"{c} {m}" for c in CLASSES for m in ("precision", "recall", "F1")]
        + ["Balanced accuracy", "95% CI"]
    ]

    def row(name, s):
        cells = [_fmt(s[c][m]) for c in CLASSES for m in ("precision", "recall", "f1")]
        lo, hi = s["balanced_accuracy"]["ci95"]
        return [name, *cells, _fmt(s["balanced_accuracy"]), f"{lo:.3f}–{hi:.3f}"]

    for label, block in experiments(results):
        rows.append(row(f"{label}: real", block["real"]))
        for name, s in block["augmented"].items():
            added = "+".join(str(s["added"][c]) for c in CLASSES)
            rows.append(row(f"{label}: real + {added} from {set_label(results, name)}", s))
        base = block.get("control_base")
        if base:
            rows.append(
                row(f"{label}: real without one of {base['folds']} control folds (mean over folds)", base)
            )
    return rows


def _gain(g: dict | None) -> str:
    return describe(g) if g else "—"


def gains_note(results: dict) -> str:
    sel = results["selection"]
    delta = sel["min_gain"]
    seeds = results["options"]["classify_seeds"]
    if seeds > 1:
        counted = f"counting the test images and the {seeds} seeds once each; Student-t for few seeds"
    elif results["options"].get("seed_sd") is not None:
        counted = (
            f"one seed: the test images, plus a declared seed-to-seed SD of {results['options']['seed_sd']:.3f} "
            "(not measured here)"
        )
    else:
        counted = (
            "one seed: the test images only, the seed's variance not measured, so every word is 'cannot tell'"
        )
    return (
        f"Balanced-accuracy gains over the real-only classifier, mean over seeds [95% interval {counted}]. "
        f"Chance is 0.5. Each gain is read against 0 and the minimum gain worth having, {delta:+.3f}: helps "
        f"(interval above 0 and reaching {delta:+.3f}), below the minimum (above 0, wholly below {delta:+.3f}), "
        f"does not help (holds 0, wholly below {delta:+.3f}), harms (wholly below 0), cannot tell (otherwise; "
        "with the smallest gain detectable with 80% power). Positive control, cross-fitted: the real train split "
        "cut into folds, each fold's images added to a classifier trained on the rest (the whole split's "
        "classifier minus the mean of the classifiers without a fold); unless they help, the test split cannot "
        "show what synthetic images add. Negative control: a checkpoint's images with AD and NON_AD swapped; a "
        "classifier that reads the synthetic labels loses accuracy."
    )


def gain_rows(results: dict) -> list[list[str]]:
    blocks = [(label, block) for label, block in experiments(results) if block["gains"]]
    rows = [["Added images", *[f"gain ({label})" for label, _ in blocks]]]
    for name in blocks[0][1]["gains"] if blocks else []:
        rows.append([set_label(results, name), *[_gain(b["gains"].get(name)) for _, b in blocks]])
    for name in blocks[0][1]["controls"]["swapped"] if blocks else []:
        rows.append(
            [
                f"{name}, labels swapped (negative control)",
                *[_gain(b["controls"]["swapped"].get(name)) for _, b in blocks],
            ]
        )
    return rows


def table2(results: dict, space: str) -> list[list[str]]:
    rows = [["Checkpoint", *[TITLES[k] for k, *_ in COMPARISONS]]]
    for name, kids in results["kid"][space].items():
        rows.append(
            [
                set_label(results, name),
                *[f"{kids[k]['mean']:.4f} ({kids[k]['se']:.4f})" for k, *_ in COMPARISONS],
            ]
        )
    scale = results.get("kid_scale", {}).get(space)
    if scale:
        cell = f"{scale['mean']:.4f} ({scale['se']:.4f})"
        rows.append(["real AD vs real NON_AD (the scale)", cell, cell, cell, cell])
    return rows


def separation_rows(results: dict) -> list[list[str]]:
    rows = [["Checkpoint", "map k-NN (chance)", "classes [95% CI] p", "real vs syn [95% CI] p"]]
    for name, sep in results["separation"].items():
        t = results["tsne"].get(name)
        cells = [
            f"{v['balanced_accuracy']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}] p={v['p_value']:.3f}"
            for v in (sep["classes"], sep["real_vs_synthetic"])
        ]
        knn = f"{t['knn_accuracy']:.2f} ({t['knn_chance']:.2f})" if t else "no map"
        rows.append([set_label(results, name), knn, *cells])
    return rows


def memorisation_rows(results: dict) -> list[list[str]]:
    rows = [
        [
            "Space",
            "Checkpoint",
            "near-copies",
            "reference rate",
            "p (Holm)",
            "median NN distance (real test)",
            "copies",
        ]
    ]
    for space, m in results["memorisation"].items():
        for name, c in m["checkpoints"].items():
            reference = (
                f"{c['chance']:.3f} (test images)" if c["chance"] > 0 else f"{m['tolerance']:.3f} (tolerance)"
            )
            rows.append(
                [
                    space,
                    set_label(results, name),
                    f"{c['count']} of {c['images']} ({c['near_copies']:.3f}; below {c['upper95']:.3f} at 95%)",
                    reference,
                    f"{c['p_adjusted']:.3g}",
                    f"{c['median_distance']:.3g} ({m['median_test_distance']:.3g})",
                    status(c),
                ]
            )
    return rows


def fidelity_rows(results: dict) -> list[list[str]]:
    """Per set and class: fidelity, its difference from the judge's real recall [95%], status."""
    table = results["selection"]["clinical"]["table"]
    rows = [["Images", *[f"{c}: recognised as {c} (− real recall [95%])" for c in CLASSES]]]
    for name, t in table.items():
        cells = []
        for c in CLASSES:
            f = t["fidelity"][c]
            lo, hi = f["diff_ci95"]
            cells.append(
                f"{f['share']:.2f} ({f['share'] - f['recall']:+.2f} [{lo:+.2f}, {hi:+.2f}]) {f['status']}"
            )
        rows.append([set_label(results, name), *cells])
    for label, judge in (
        ("real test images (the judge's recall: the threshold)", results["fidelity_judge"]),
        ("real test images (the control's fold judges' recall)", results.get("fidelity_control_judge")),
    ):
        if judge:
            rows.append([label, *[f"{judge['recall'][c]:.2f} of {judge['images'][c]}" for c in CLASSES]])
    rec = results.get("fidelity_reconstructed")
    if rec:
        rows.append(
            [
                "real test images after the autoencoder",
                *[f"{rec[c]:.2f} of {rec['images'][c]}" for c in CLASSES],
            ]
        )
    return rows


def judge_skill_text(results: dict) -> str:
    """The judge's Youden's J on the real test images with its interval: whether fidelity can tell."""
    judge = results["fidelity_judge"]
    skill = judge_skill(judge["recall"], judge["images"])
    lo, hi = skill["ci95"]
    verdict = "shown" if skill["shown"] else "not shown: every class's fidelity is untestable"
    return f"The judge's skill, Youden's J = recall AD + recall NON_AD − 1 (chance 0): {skill['youden']:+.2f} [{lo:+.2f}, {hi:+.2f}], {verdict}."


def selection_rows(results: dict) -> list[list[str]]:
    sel = results["selection"]
    rows = [
        [
            "Checkpoint",
            "same-class KID (naive)",
            "margin AD (95%)",
            "margin NON_AD (95%)",
            "m_AD + m_NON_AD (95%)",
            *[f"fidelity {c}" for c in CLASSES],
            "copies",
            "eligible",
        ]
    ]
    for name, t in sel["clinical"]["table"].items():
        naive = sel["naive"]["scores"].get(name)
        fidelity = t["fidelity"]
        rows.append(
            [
                set_label(results, name),
                f"{naive:.4f}" if naive is not None else "—",
                f"{t['margin_AD']:+.4f} ± {1.96 * t['margin_AD_se']:.4f}",
                f"{t['margin_NON_AD']:+.4f} ± {1.96 * t['margin_NON_AD_se']:.4f}",
                f"{t['shift_free']:+.4f} ± {1.96 * t['shift_free_se']:.4f}",
                *[
                    f"{fidelity[c]['share']:.2f} {fidelity[c]['status']}" if fidelity else "not measured"
                    for c in CLASSES
                ],
                "not checked" if t["copies"] is None else ("yes" if t["copies"] else "no"),
                "yes" if t["eligible"] else "no",
            ]
        )
    return rows


def verdict_rows(results: dict, gains: dict | None = None) -> list[list[str]]:
    """The verdict's table: per judged set, where each margin lies, each class's fidelity, copies,
    and the gain with its word (the study's classifier's, or `gains`)."""
    sel = results["selection"]
    gains = gains if gains is not None else results.get("classification", {}).get("gains", {})
    rows = [
        [
            "Checkpoint",
            "margin AD",
            "margin NON_AD",
            "fidelity AD",
            "fidelity NON_AD",
            "copies",
            "gain [95%]",
            "word",
        ]
    ]
    for name, t in sel["clinical"]["table"].items():
        fidelity = t["fidelity"]
        g = gains.get(name)
        rows.append(
            [
                set_label(results, name),
                f"{t['margin_AD']:+.4f} {t['margins']['AD']}",
                f"{t['margin_NON_AD']:+.4f} {t['margins']['NON_AD']}",
                *[fidelity[c]["status"] if fidelity else "not measured" for c in CLASSES],
                "not checked" if t["copies"] is None else ("yes" if t["copies"] else "no"),
                f"{g['mean']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]" if g else "not measured",
                str(g["word"]) if g else "—",
            ]
        )
    return rows


def picks_text(results: dict) -> str:
    """Each rule's pick with the share of redraws from the KIDs' errors that keep it."""
    sel = results["selection"]

    def one(rule):
        pick, p = sel[rule]["pick"], sel[rule]["probability"]
        return f"{pick} ({p:.0%} of redraws)" if pick else "none"

    return (
        f"Naive pick: {one('naive')}. Clinical pick among the eligible checkpoints: {one('clinical')}; "
        f"{sel['clinical']['ties']}. A redraw draws every KID (or margin) from a normal with its standard error."
    )
