"""The report's tables as rows of strings (Table 1 with its controls, Table 2, the t-SNE numbers,
memorisation, selection), shared by report.md and index.html."""

from __future__ import annotations

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.kid import COMPARISONS

TITLES = {
    "syn_AD_vs_real_AD": "Synthetic AD vs Real AD ↓",
    "syn_AD_vs_real_NON_AD": "Synthetic AD vs Real NON_AD ↑",
    "syn_NON_AD_vs_real_NON_AD": "Synthetic NON_AD vs Real NON_AD ↓",
    "syn_NON_AD_vs_real_AD": "Synthetic NON_AD vs Real AD ↑",
}


def _fmt(stat: dict) -> str:
    return f"{stat['mean']:.4f} ({stat['std']:.4f})"


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
        if "controls" in block:
            rows.append(row(f"{label}: half of the real (control)", block["controls"]["real_half"]))
        for name, s in block["augmented"].items():
            rows.append(row(f"{label}: real + synthetic {name}", s))
    return rows


def _gain(g: dict | None) -> str:
    return f"{g['mean']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]" if g else "—"


def controls_text(results: dict) -> str:
    """What each classifier's controls say about the power of Table 1 (table1.py)."""
    lines = [
        "Balanced-accuracy gains, mean over seeds [hierarchical bootstrap 95% CI over test images and "
        "seeds]. Chance is 0.5. Power control: the gain from the second half of the real training "
        "images; unless it is clearly positive, the experiment cannot see what synthetic images add. "
        "Negative control: the gain from a checkpoint's synthetic images with AD and NON_AD swapped; "
        "a classifier that reads the synthetic labels loses accuracy."
    ]
    for label, block in experiments(results):
        c = block.get("controls")
        if not c:
            continue
        swapped = "; ".join(f"{n}: {_gain(g)}" for n, g in c["swapped"].items()) or "not run"
        lines.append(f"- {label}: half → all real {_gain(c['more_real'])}; labels swapped {swapped}.")
    return "\n".join(lines)


def table2(results: dict, space: str) -> list[list[str]]:
    rows = [["Checkpoint", *[TITLES[k] for k, *_ in COMPARISONS]]]
    for name, kids in results["kid"][space].items():
        rows.append([name, *[f"{kids[k]['mean']:.4f} ({kids[k]['se']:.4f})" for k, *_ in COMPARISONS]])
    return rows


def separation_rows(results: dict) -> list[list[str]]:
    rows = [["Checkpoint", "map k-NN (chance)", "classes (95% CI)", "real vs syn (95% CI)"]]
    for name, sep in results["separation"].items():
        t = results["tsne"][name]
        cells = [
            f"{v['balanced_accuracy']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]"
            for v in (sep["classes"], sep["real_vs_synthetic"])
        ]
        rows.append([name, f"{t['knn_accuracy']:.2f} ({t['knn_chance']:.2f})", *cells])
    return rows


def memorisation_rows(results: dict) -> list[list[str]]:
    rows = [
        [
            "Feature space",
            "Checkpoint",
            "near-copies (chance)",
            "p",
            "median NN distance (real test)",
            "copies",
        ]
    ]
    for space, m in results["memorisation"].items():
        for name, c in m["checkpoints"].items():
            rows.append(
                [
                    space,
                    name,
                    f"{c['near_copies']:.3f} ({c['chance']:.3f})",
                    f"{c['p_value']:.3g}",
                    f"{c['median_distance']:.3g} ({m['median_test_distance']:.3g})",
                    "yes" if c["copies"] else "no",
                ]
            )
    return rows


def selection_rows(results: dict) -> list[list[str]]:
    sel = results["selection"]
    blocks = experiments(results)
    rows = [
        [
            "Checkpoint",
            "same-class KID (naive)",
            "margin AD (95%)",
            "margin NON_AD (95%)",
            "class fidelity",
            "copies",
            "eligible",
            *[f"augmentation gain ({label})" for label, _ in blocks],
        ]
    ]

    for name, t in sel["clinical"]["table"].items():
        rows.append(
            [
                name,
                f"{sel['naive']['scores'][name]:.4f}",
                f"{t['margin_AD']:+.4f} ± {1.96 * t['margin_AD_se']:.4f}",
                f"{t['margin_NON_AD']:+.4f} ± {1.96 * t['margin_NON_AD_se']:.4f}",
                f"{t['fidelity_balanced']:.2f}",
                "yes" if t.get("copies") else "no",
                "yes" if t["eligible"] else "no",
                *[_gain(block["gains"].get(name)) for _, block in blocks],
            ]
        )
    return rows
