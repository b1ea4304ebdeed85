"""t-SNE of real AD, real NON_AD, synthetic AD and synthetic NON_AD per checkpoint (PCA to 50
first; openTSNE's FFT-accelerated t-SNE from a PCA start, several times faster than
scikit-learn's Barnes-Hut at 10k points, see benchmarks/README.md), with numbers that say what the eye sees: leave-one-out k-NN accuracy of telling the four
groups apart in the map, beside its chance level, and the silhouette of each group.

The chance level is the same k-NN accuracy with the group labels shuffled over the same points
(mean over a few permutations). It is not 0.25: with groups of unequal size the majority vote
favours the larger groups."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

FFT_FROM = 5000  # points: below, Barnes-Hut; above, the FFT gradient (its fixed cost pays off)
GROUPS = ("real AD", "real NON_AD", "synthetic AD", "synthetic NON_AD")
COLORS = {
    "real AD": "#b2182b",
    "real NON_AD": "#2166ac",
    "synthetic AD": "#f4a582",
    "synthetic NON_AD": "#92c5de",
}
MARKERS = {"real AD": "o", "real NON_AD": "o", "synthetic AD": "^", "synthetic NON_AD": "^"}


@dataclass
class TsneMap:
    points: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,) group index into GROUPS
    knn_accuracy: float
    knn_chance: float  # the accuracy with shuffled group labels
    silhouette: dict[str, float]


def embed(groups: dict[str, np.ndarray], seed: int = 0, perplexity: float = 30.0) -> TsneMap:
    from openTSNE import TSNE
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_samples

    x = np.concatenate([groups[g] for g in GROUPS])
    labels = np.concatenate([np.full(len(groups[g]), i) for i, g in enumerate(GROUPS)])
    n_comp = min(50, x.shape[0] - 1, x.shape[1])
    x = PCA(n_components=n_comp, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, (len(x) - 1) / 3)
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        initialization="pca",
        negative_gradient_method="fft" if len(x) >= FFT_FROM else "bh",
        random_state=seed,
        n_jobs=os.cpu_count() or 1,
    )
    points = np.asarray(tsne.fit(x))
    sil = silhouette_samples(points, labels)
    accuracy, chance = knn_accuracy(points, labels, seed=seed)
    return TsneMap(
        points, labels, accuracy, chance, {g: float(sil[labels == i].mean()) for i, g in enumerate(GROUPS)}
    )


def knn_accuracy(
    points: np.ndarray, labels: np.ndarray, k: int = 5, permutations: int = 20, seed: int = 0
) -> tuple[float, float]:
    """Leave-one-out k-NN accuracy of telling the groups apart (1.0: fully apart) and its chance
    level, the mean accuracy with the labels shuffled over the same neighbourhoods."""
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    neighbours = idx[:, 1:]

    def accuracy(lab: np.ndarray) -> float:
        counts = np.stack([(lab[neighbours] == g).sum(1) for g in range(len(GROUPS))], axis=1)
        return float((counts.argmax(1) == lab).mean())  # ties go to the first group, as bincount's

    rng = np.random.default_rng(seed)
    chance = float(np.mean([accuracy(rng.permutation(labels)) for _ in range(permutations)]))
    return accuracy(labels), chance


def plot_grid(maps: dict[str, TsneMap], path, separations: dict | None = None) -> None:
    """One map per checkpoint; titles carry the map's k-NN accuracy and, given them, the
    feature-space numbers of separation.py, each beside its chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (name, m) in zip(axes.ravel(), maps.items(), strict=False):
        ax.set_axis_on()
        for i, g in enumerate(GROUPS):
            pts = m.points[m.labels == i]
            ax.scatter(
                pts[:, 0], pts[:, 1], s=9, c=COLORS[g], marker=MARKERS[g], label=g, alpha=0.8, linewidths=0
            )
        title = f"{name}\nmap k-NN {m.knn_accuracy:.2f} (chance {m.knn_chance:.2f})"
        if separations and name in separations:
            sep = separations[name]
            title += (
                f"\nclasses {sep['classes']['balanced_accuracy']:.2f}, real vs syn "
                f"{sep['real_vs_synthetic']['balanced_accuracy']:.2f} (chance 0.50)"
            )
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1 (no unit)", fontsize=7)
        ax.set_ylabel("t-SNE 2 (no unit)", fontsize=7)
    # One legend for every panel (same four groups, same colours), below them all.
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(GROUPS), fontsize=8, markerscale=1.5)
    fig.tight_layout(rect=(0, 0.07 / rows, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
