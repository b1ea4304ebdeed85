"""The report: index.html (self-contained, images embedded), report.md, results.json and the PNG
plots beside them, written completely or not at all."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
from PIL import Image

from polypsynth.atomic import atomic_dir
from polypsynth.data.records import CLASSES
from polypsynth.evaluate import tsne
from polypsynth.evaluate.kid import COMPARISONS
from polypsynth.evaluate.tables import (
    TITLES,
    controls_text,
    experiments,
    memorisation_rows,
    selection_rows,
    separation_rows,
    table1,
    table2,
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_kid_curves(results: dict, path: Path) -> None:
    """One row of the four comparisons per feature space (their scales differ by orders of
    magnitude), error bars one standard error over images."""
    plt = _plt()
    names = [c["name"] for c in results["checkpoints"]]
    xs = [c["step"] if c["step"] is not None else i for i, c in enumerate(results["checkpoints"])]
    spaces = list(results["kid"])
    fig, axes = plt.subplots(len(spaces), 4, figsize=(15, 3.4 * len(spaces)), sharex=True, squeeze=False)
    for row, space in zip(axes, spaces, strict=True):
        kids = results["kid"][space]
        for ax, (key, *_rest) in zip(row, COMPARISONS, strict=True):
            means = [kids[n][key]["mean"] for n in names]
            ses = [kids[n][key]["se"] for n in names]
            ax.errorbar(xs, means, yerr=ses, marker="o", capsize=3)
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
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(names))
    ceiling = results.get("fidelity_ceiling")
    for offset, c, colour in zip((-0.2, 0.2), CLASSES, ("C0", "C1"), strict=True):
        axes[0].bar(
            x + offset, [results["fidelity"][n][c] for n in names], 0.4, color=colour, label=f"synthetic {c}"
        )
        if ceiling:
            axes[0].axhline(ceiling[c], color=colour, lw=1.2, ls=":", label=f"autoencoder ceiling {c}")
    axes[0].axhline(0.5, color="k", lw=0.8, ls="--")
    axes[0].set_xticks(x, names, rotation=30, fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[0].set_title("Class fidelity (real-data classifier says 'same class')", fontsize=10)
    axes[0].legend(fontsize=8)
    for (label, block), colour in zip(experiments(results), ("C0", "C1"), strict=False):
        real = block["real"]["balanced_accuracy"]
        axes[1].axhspan(real["mean"] - real["std"], real["mean"] + real["std"], color=colour, alpha=0.15)
        axes[1].axhline(real["mean"], color=colour, lw=1, ls="--", label=f"{label}: real only")
        if block["augmented"]:
            aug = [block["augmented"][n]["balanced_accuracy"] for n in names]
            axes[1].errorbar(
                x,
                [a["mean"] for a in aug],
                yerr=[a["std"] for a in aug],
                fmt="o",
                color=colour,
                capsize=3,
                label=f"{label}: real + synthetic",
            )
    axes[1].set_xticks(x, names, rotation=30, fontsize=8)
    axes[1].set_title("Balanced accuracy on the real test split", fontsize=10)
    axes[1].legend(fontsize=8)
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
            imgs = [
                np.asarray(Image.open(p).convert("RGB").resize((tile, tile)))
                for p in ck.images[c][:per_class]
            ]
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


def _md_table(rows) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _html_table(rows) -> str:
    head, *body = rows
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


KID_NOTE = (
    "Mean (standard error over images): the unbiased estimate over every pair of images with its "
    "jackknife error; sets over 4096 images are split into disjoint blocks, each estimated so, "
    "and the blocks' mean and combined error are shown. "
    "Inception features are the standard raw ones; EfficientNet features (ImageNet weights, not "
    "fine-tuned) are centred and scaled once on the real training images, so their KIDs do not depend "
    "on the network's arbitrary scale. Values are not comparable across feature spaces."
)
SELECTION_NOTE = (
    "Naive rule: lowest same-class KID. Clinical rule: both cross-class margins above zero by more "
    "than 1.96 standard errors (their 95% intervals exclude zero) and class fidelity above 0.5 for both "
    "classes, ranked by the smaller margin and the fidelity. A margin within its uncertainty cannot "
    "decide either way. Margin errors come from a jackknife over the three image sets each margin "
    "involves."
)
SECTIONS = (
    "Verdict",
    "Table 2",
    "KID curves",
    "t-SNE",
    "Samples",
    "Class fidelity",
    "Table 1",
    "Memorisation",
    "Selection",
)
TSNE_NOTE = (
    "Map k-NN: leave-one-out accuracy of telling the four groups apart in each 2-D map (1.0 = apart), beside "
    "its chance level (the same accuracy with the group labels shuffled; not 0.25, the groups differ in "
    "size). Measured in the feature space itself, each with chance 0.50 and a 95% bootstrap interval over "
    "images: classes = balanced accuracy of a 5-NN classifier fitted on labelled real images naming the "
    "synthetic images' classes; real vs syn = balanced accuracy of a cross-validated logistic regression "
    "telling real from synthetic images (a two-sample test: 0.50 indistinguishable)."
)
MEMO_NOTE = (
    "A synthetic image is a near-copy when it lies closer to a real training image than {q:.0%} of real "
    "test images do (nearest-neighbour distance in each feature space); images as new as real ones give "
    "about {q:.0%} by chance. 'copies' when a one-sided Fisher exact test against the test images' own "
    "share says more than chance (p < 0.01); the clinical rule refuses such a checkpoint."
)
PLOTS = {
    "KID curves": "kid_curves.png",
    "t-SNE": "tsne_grid.png",
    "Samples": "samples_grid.png",
    "Class fidelity": "fidelity_augmentation.png",
}


def write_report(results: dict, checkpoints, out: Path, overwrite: bool = True) -> Path:
    maps = results.pop("_maps")
    with atomic_dir(out, overwrite=overwrite, what="report folder") as tmp:
        plot_kid_curves(results, tmp / PLOTS["KID curves"])
        tsne.plot_grid(maps, tmp / PLOTS["t-SNE"], results.get("separation"))
        sample_grid(checkpoints, tmp / PLOTS["Samples"])
        plot_fidelity_and_augmentation(results, tmp / PLOTS["Class fidelity"])
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=float))
        primary = results["primary_features"]
        verdict = results["selection"]["verdict"]
        fid_rows = [
            [
                "Checkpoint",
                *[f"synthetic {c} recognised as {c}" for c in CLASSES],
                "t-SNE k-NN accuracy (chance)",
            ]
        ]
        for name, f in results["fidelity"].items():
            t = results["tsne"][name]
            fid_rows.append(
                [name, *[f"{f[c]:.2f}" for c in CLASSES], f"{t['knn_accuracy']:.2f} ({t['knn_chance']:.2f})"]
            )
        judge = results["fidelity_judge"]
        judge_line = (
            f"Judge: {judge['kind']}, trained on the real training split; its own balanced accuracy on the "
            f"real test split is {judge['real']['mean']:.3f} (a fidelity figure means no more than that)."
        )
        ceiling = results.get("fidelity_ceiling")
        if ceiling:
            fid_rows.append(
                [
                    "autoencoder ceiling: real test images encoded and decoded",
                    *[f"{ceiling[c]:.2f}" for c in CLASSES],
                    "",
                ]
            )
            judge_line += (
                " The last row is the same judge on the real test images after one pass through the "
                "model's autoencoder: samples cannot be expected to show a class better than that."
            )
        memo_note = MEMO_NOTE.format(q=next(iter(results["memorisation"].values()))["quantile"])
        md = [
            "# polypsynth evaluation report",
            f"## Verdict\n\n{verdict}",
            *[
                f"## Table 2 — KID per checkpoint ({space} features)\n\n{KID_NOTE}\n\n{_md_table(table2(results, space))}"
                for space in results["kid"]
            ],
            f"## KID curves\n\n![KID curves]({PLOTS['KID curves']})",
            f"## t-SNE ({primary} features)\n\n{TSNE_NOTE}\n\n{_md_table(separation_rows(results))}\n\n![t-SNE]({PLOTS['t-SNE']})",
            f"## Samples\n\n![samples]({PLOTS['Samples']})",
            f"## Class fidelity\n\n{judge_line}\n\n{_md_table(fid_rows)}\n\n![fidelity]({PLOTS['Class fidelity']})",
            f"## Table 1 — classification on the real test split\n\n{_md_table(table1(results))}\n\n{controls_text(results)}",
            f"## Memorisation\n\n{memo_note}\n\n{_md_table(memorisation_rows(results))}",
            f"## Selection\n\n{SELECTION_NOTE}\n\n{_md_table(selection_rows(results))}",
        ]
        (tmp / "report.md").write_text("\n\n".join(md) + "\n")
        html_parts = [
            "<!doctype html><html><head><meta charset='utf-8'><title>polypsynth evaluation</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}.verdict{font-size:17px;background:#f4f4f4;padding:1em}</style></head><body>",
            "<h1>polypsynth evaluation report</h1>",
            f"<h2>Verdict</h2><p class='verdict'>{html.escape(verdict)}</p>",
        ]
        for space in results["kid"]:
            html_parts.append(
                f"<h2>Table 2 — KID per checkpoint ({space} features)</h2><p>{html.escape(KID_NOTE)}</p>{_html_table(table2(results, space))}"
            )
        for title in ("KID curves", "t-SNE", "Samples", "Class fidelity"):
            data = base64.b64encode((tmp / PLOTS[title]).read_bytes()).decode()
            extra = {
                "Class fidelity": f"<p>{html.escape(judge_line)}</p>{_html_table(fid_rows)}",
                "t-SNE": f"<p>{html.escape(TSNE_NOTE)}</p>{_html_table(separation_rows(results))}",
            }.get(title, "")
            html_parts.append(
                f"<h2>{title}</h2>{extra}<img alt='{title}' src='data:image/png;base64,{data}'>"
            )
        html_parts.append(
            f"<h2>Table 1 — classification on the real test split</h2>{_html_table(table1(results))}"
            + "".join(f"<p>{html.escape(line)}</p>" for line in controls_text(results).split("\n"))
        )
        html_parts.append(
            f"<h2>Memorisation</h2><p>{html.escape(memo_note)}</p>{_html_table(memorisation_rows(results))}"
        )
        html_parts.append(
            f"<h2>Selection</h2><p>{html.escape(SELECTION_NOTE)}</p>{_html_table(selection_rows(results))}</body></html>"
        )
        (tmp / "index.html").write_text("\n".join(html_parts))
    return out
