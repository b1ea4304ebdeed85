"""The report: index.html (self-contained, images embedded), report.md, results.json and the PNG
plots beside them, written completely or not at all. Every table and figure but the t-SNE maps and
the sample grid is drawn from results.json's dict (Evaluation.to_dict), the form a reader of the
report folder also has."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from polypsynth.atomic import atomic_dir
from polypsynth.data.images import open_rgb
from polypsynth.data.records import CLASSES
from polypsynth.evaluate import tsne
from polypsynth.evaluate.kid import COMPARISONS
from polypsynth.evaluate.memorisation import QUANTILE
from polypsynth.evaluate.notes import (
    FIDELITY_NOTE,
    MEMO_NOTE,
    SELECTION_NOTE,
    TSNE_NOTE,
    kid_note,
)
from polypsynth.evaluate.results import Evaluation
from polypsynth.evaluate.selection import FIDELITY_TOLERANCE
from polypsynth.evaluate.tables import (
    TITLES,
    experiments,
    fidelity_rows,
    gain_rows,
    gains_note,
    judge_skill_text,
    markdown,
    memorisation_rows,
    picks_text,
    selection_rows,
    separation_rows,
    table1,
    table2,
    verdict_rows,
)
from polypsynth.evaluate.verdict import MEANING


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_kid_curves(results: dict, path: Path) -> None:
    """One row of the comparisons (kid.COMPARISONS) per feature space (their scales differ by orders of
    magnitude), error bars one standard error over images."""
    plt = _plt()
    names = [c["name"] for c in results["checkpoints"]]
    xs = [c["step"] if c["step"] is not None else i for i, c in enumerate(results["checkpoints"])]
    spaces = list(results["kid"])
    columns = len(COMPARISONS)
    fig, axes = plt.subplots(
        len(spaces), columns, figsize=(3.75 * columns, 3.4 * len(spaces)), sharex=True, squeeze=False
    )
    for row, space in zip(axes, spaces, strict=True):
        kids = results["kid"][space]
        scale = results.get("kid_scale", {}).get(space)
        for ax, (key, *_rest) in zip(row, COMPARISONS, strict=True):
            means = [kids[n][key]["mean"] for n in names]
            ses = [kids[n][key]["se"] for n in names]
            ax.errorbar(xs, means, yerr=ses, marker="o", capsize=3)
            if scale:  # the scale: how far apart the real classes are
                ax.axhline(scale["mean"], color="k", lw=0.8, ls="--", label="real AD vs real NON_AD")
                ax.legend(fontsize=7)
            ax.set_title(f"{TITLES[key]} ({space})", fontsize=9)
            ax.set_xlabel("iteration")
            ax.set_ylabel("KID (± 1 SE)")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_fidelity_and_augmentation(results: dict, path: Path) -> None:
    plt = _plt()
    names = [c["name"] for c in results["checkpoints"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    x = np.arange(len(names))
    recall = results["fidelity_judge"]["recall"]
    for offset, c, colour in zip((-0.2, 0.2), CLASSES, ("C0", "C1"), strict=True):
        axes[0].bar(
            x + offset, [results["fidelity"][n][c] for n in names], 0.4, color=colour, label=f"synthetic {c}"
        )
        axes[0].axhline(
            recall[c], color=colour, lw=1.2, ls=":", label=f"judge's recall of real {c} (threshold)"
        )
    axes[0].axhline(0.5, color="k", lw=0.8, ls="--", label="chance 0.50")
    axes[0].set_xticks(x, names, rotation=30, fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("share named as its own class")
    axes[0].set_title("Class fidelity (real-data classifier says 'same class')", fontsize=10)
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)  # below the bars
    for (label, block), colour in zip(experiments(results), ("C0", "C1"), strict=False):
        real = block["real"]["balanced_accuracy"]
        axes[1].axhspan(*real["ci95"], color=colour, alpha=0.15)
        axes[1].axhline(real["mean"], color=colour, lw=1, ls="--", label=f"{label}: real only (95% band)")
        aug = [block["augmented"][n]["balanced_accuracy"] for n in names if n in block["augmented"]]
        if aug:
            axes[1].errorbar(
                x,
                [a["mean"] for a in aug],
                yerr=np.abs(np.array([a["ci95"] for a in aug]).T - [a["mean"] for a in aug]),
                fmt="o",
                color=colour,
                capsize=3,
                label=f"{label}: real + synthetic (95%)",
            )
    axes[1].axhline(0.5, color="k", lw=0.8, ls="--", label="chance 0.50")
    axes[1].set_xticks(x, names, rotation=30, fontsize=8)
    axes[1].set_ylabel("balanced accuracy")
    axes[1].set_title("Balanced accuracy on the real test split", fontsize=10)
    axes[1].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_grid(checkpoints, path: Path, per_class: int = 4, tile: int = 96) -> None:
    """Figure 3 style: one row per class, a block of images per checkpoint, labelled."""
    plt = _plt()
    fig, axes = plt.subplots(
        len(CLASSES), len(checkpoints), figsize=(2.4 * len(checkpoints), 2.6 * len(CLASSES)), squeeze=False
    )
    for j, ck in enumerate(checkpoints):
        for i, c in enumerate(CLASSES):
            imgs = [np.asarray(open_rgb(p).resize((tile, tile))) for p in ck.images[c][:per_class]]
            while len(imgs) < per_class:
                imgs.append(np.zeros((tile, tile, 3), np.uint8))
            half = (per_class + 1) // 2
            block = np.concatenate(
                [
                    np.concatenate(imgs[:half], 1),
                    np.concatenate(imgs[half:] + [np.zeros_like(imgs[0])] * (2 * half - per_class), 1),
                ],
                0,
            )
            ax = axes[i, j]
            ax.imshow(block)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(ck.name, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"synthetic {c}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _html_table(rows) -> str:
    head, *body = rows
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


SECTIONS = (
    "Verdict",
    "Why",
    "Inputs",
    "Table 2",
    "KID curves",
    "t-SNE",
    "Samples",
    "Class fidelity",
    "Table 1",
    "Memorisation",
    "Selection",
)
PLOTS = {
    "KID curves": "kid_curves.png",
    "t-SNE": "tsne_grid.png",
    "Samples": "samples_grid.png",
    "Class fidelity": "fidelity_augmentation.png",
}


def inputs_text(results: dict) -> str:
    """What was compared: the resolution, every set's image counts, the minimum gain."""
    real = results["real"]
    folds = results["control"]["folds"]
    counts = ", ".join(
        f"{c['name']} {'+'.join(str(c['images'][k]) for k in CLASSES)}" for c in results["checkpoints"]
    )
    grouped = (
        f", grouped by lesion ({results['control']['grouped_by']})"
        if results["control"].get("grouped_by")
        else ""
    )
    return (
        f"Every image compared at the generator's resolution, {results['resolution']}x{results['resolution']} "
        f"(short side resized, centre square, as in training). Real images (AD+NON_AD): train "
        f"{'+'.join(str(real['train'][c]) for c in CLASSES)}, test {'+'.join(str(real['test'][c]) for c in CLASSES)}; "
        f"the positive control cross-fits the train split over {len(folds)} folds "
        f"({', '.join('+'.join(str(f[c]) for c in CLASSES) for f in folds)}{grouped}). Synthetic: {counts}. "
        f"Gains read against a minimum gain of {results['selection']['min_gain']:+.3f} balanced accuracy."
    )


def header_text(results: dict) -> str:
    """The line under the title: what made the report, when, and from what."""
    p = results.get("provenance")
    if not p:
        return "Written by polypsynth (inputs not recorded)."
    return f"polypsynth {p['polypsynth']}, {p['date']}: real data {p['real']} against synthetic images {p['synthetic']}."


def _counts(images: dict) -> str:
    return " + ".join(f"{images[c]} {c}" for c in CLASSES)


def inputs_rows(results: dict) -> list[list[str]]:
    """Every input with its image counts, and the settings a reader needs to repeat the run."""
    p = results.get("provenance", {})
    opts, real = results["options"], results["real"]
    rows = [["Input", "What", "Images"]]
    rows.append(["real data, train split", str(p.get("real", "—")), _counts(real["train"])])
    rows.append(["real data, test split", str(p.get("real", "—")), _counts(real["test"])])
    rows.append(
        [
            "held-out real (positive control)",
            f"the train split, {len(results['control']['folds'])} folds, each judged against the rest",
            _counts(results["control"]["images"]),
        ]
    )
    for ck in results["checkpoints"]:
        rows.append(
            [f"synthetic {ck['name']}", f"{p.get('synthetic', '—')}/{ck['name']}", _counts(ck["images"])]
        )
    recon = results.get("fidelity_reconstructed")
    if recon:
        rows.append(
            [
                "real test images after the autoencoder",
                str(p.get("reconstructions") or "—"),
                _counts(recon["images"]),
            ]
        )
    for pool in p.get("train_pools", []):
        rows.append(
            ["training pool searched for copies", pool, str(results["leakage"]["pools"].get(pool, "—"))]
        )
    clf = opts["classifier"]
    rows.append(
        [
            "settings",
            f"resolution {results['resolution']} px; features {', '.join(opts['features'])}; classifier "
            f"{results['selection'].get('gains_by', 'EfficientNet')}, {clf['image_size']} px, {clf['epochs']} epochs, "
            f"{opts['classify_seeds']} seed(s)"
            + (f" (seed SD assumed {opts['seed_sd']})" if opts.get("seed_sd") is not None else "")
            + f", synthetic share {opts['synthetic_share']}; minimum gain {opts['min_gain']}; copy tolerance "
            f"{opts['copy_tolerance']}; seed {opts['seed']}; device {opts['device']}",
            "",
        ]
    )
    return rows


Section = tuple[str, list[str], list[list[list[str]]], str | None]  # title, paragraphs, tables, plot


def _sections(results: dict) -> list[Section]:
    """(title, paragraphs, tables, plot file) of every section, for report.md and index.html alike."""
    primary = results["primary_features"]
    memo_note = MEMO_NOTE.format(
        q=QUANTILE,
        tolerance=results["options"]["copy_tolerance"],
        bits=results["leakage"]["max_distance"],
        pixel=results["leakage"]["max_pixel_distance"],
        pairs=results["leakage"]["pairs"],
        feature_pools="labelled split, control, every --train-pool"
        if results["options"]["pool_features"]
        else "labelled split or control; not the --train-pool images: --no-pool-features",
    )
    sections: list[Section] = [
        ("Verdict", [results["selection"]["verdict"]], [verdict_rows(results)], None),
        ("Why", [*results["selection"]["notes"], MEANING], [], None),
        ("Inputs", [inputs_text(results)], [inputs_rows(results)], None),
    ]
    for space in results["kid"]:
        sections.append(
            (
                f"Table 2 — KID per checkpoint ({space} features)",
                [kid_note(space, len(results["kid"]))],
                [table2(results, space)],
                None,
            )
        )
    sections += [
        ("KID curves", [], [], PLOTS["KID curves"]),
        (f"t-SNE ({primary} features)", [TSNE_NOTE], [separation_rows(results)], PLOTS["t-SNE"]),
        ("Samples", [], [], PLOTS["Samples"]),
        (
            "Class fidelity",
            [
                FIDELITY_NOTE.format(
                    kind=results["fidelity_judge"]["kind"],
                    tolerance=FIDELITY_TOLERANCE,
                    skill=judge_skill_text(results),
                )
            ],
            [fidelity_rows(results)],
            PLOTS["Class fidelity"],
        ),
        (
            "Table 1 — classification on the real test split",
            [gains_note(results)],
            [table1(results), gain_rows(results)],
            None,
        ),
        ("Memorisation", [memo_note], [memorisation_rows(results)], None),
        ("Selection", [SELECTION_NOTE, picks_text(results)], [selection_rows(results)], None),
    ]
    return sections


def _markdown(sections, header: str) -> str:
    parts = ["# polypsynth evaluation report", header]
    for title, paragraphs, tables, plot in sections:
        body = [*paragraphs, *[markdown(t) for t in tables]]
        if plot:
            body.append(f"![{title}]({plot})")
        parts.append(f"## {title}\n\n" + "\n\n".join(body))
    return "\n\n".join(parts) + "\n"


def _html(sections, folder: Path, header: str) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>polypsynth evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}.verdict{font-size:17px;background:#f4f4f4;padding:1em}</style></head><body>",
        "<h1>polypsynth evaluation report</h1>",
        f"<p class='header'>{html.escape(header)}</p>",
    ]
    for title, paragraphs, tables, plot in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for k, text in enumerate(paragraphs):
            cls = " class='verdict'" if title == "Verdict" and k == 0 else ""
            parts.append(f"<p{cls}>{html.escape(text)}</p>")
        parts += [_html_table(t) for t in tables]
        if plot:
            data = base64.b64encode((folder / plot).read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
    return "\n".join(parts) + "</body></html>"


def write_report(evaluation: Evaluation, out: Path, overwrite: bool = True) -> Path:
    """The report folder: results.json (Evaluation.to_dict), report.md, index.html and the plots,
    all drawn from that dict except the t-SNE maps and the sample grid (points and images)."""
    results = evaluation.to_dict()
    with atomic_dir(out, overwrite=overwrite, what="report folder") as tmp:
        plot_kid_curves(results, tmp / PLOTS["KID curves"])
        tsne.plot_grid(evaluation.maps, tmp / PLOTS["t-SNE"], results["separation"])
        sample_grid(evaluation.checkpoints, tmp / PLOTS["Samples"])
        plot_fidelity_and_augmentation(results, tmp / PLOTS["Class fidelity"])
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=float))
        sections = _sections(results)
        header = header_text(results)
        (tmp / "report.md").write_text(_markdown(sections, header))
        (tmp / "index.html").write_text(_html(sections, tmp, header))
    return out
