"""Does a checkpoint copy its training images? Nearest-neighbour distances in a feature space.

A real image the model never saw (the test split) lies at some distance from its nearest real
training image; the `QUANTILE` of those test-to-train distances is the near-copy threshold: a
synthetic image closer than that to a training image is a near-copy. If the model makes images as
new as real new images, about `QUANTILE` of its images fall below the threshold by chance (the
chance level shown with the share). A one-sided Fisher exact test compares the synthetic share
with the test images' own share below the threshold (both sets' sampling error counted); a
checkpoint copies when that test says more than chance at level `ALPHA`. The clinical rule
(selection.py) refuses such a checkpoint, however good its KID.

The positive control's images are real training images held out of the evaluation's reference:
the model trained on them, so every checkpoint is searched against them too, but the control
itself only against the rest (each image would otherwise be its own nearest copy)."""

from __future__ import annotations

import numpy as np

from polypsynth.data.records import CLASSES

QUANTILE = 0.05
ALPHA = 0.01


def nearest_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance of each query row to its nearest reference row."""
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(query)
    return dist[:, 0]


def check(
    train_f: dict,
    test_f: dict,
    synthetic_f: dict[str, dict],
    held_out: dict | None = None,
    control: str | None = None,
) -> dict:
    """Per checkpoint: the share of near-copies, its chance level, the Fisher p-value and the verdict
    `copies`; with the threshold and the median distances (synthetic vs real test) to the
    training images. `held_out`: the control's features, a training pool for every set but
    `control`."""
    from scipy.stats import fisher_exact

    train = np.concatenate([train_f[c] for c in CLASSES])
    everything = np.concatenate([train, *[held_out[c] for c in CLASSES]]) if held_out else train
    d_test = nearest_distances(np.concatenate([test_f[c] for c in CLASSES]), everything)
    threshold = float(np.quantile(d_test, QUANTILE))
    test_below = int((d_test < threshold).sum())
    out: dict = {
        "threshold": threshold,
        "quantile": QUANTILE,
        "median_test_distance": float(np.median(d_test)),
    }
    per = {}
    for name, syn in synthetic_f.items():
        d = nearest_distances(
            np.concatenate([syn[c] for c in CLASSES]), train if name == control else everything
        )
        below = int((d < threshold).sum())
        table = [[below, len(d) - below], [test_below, len(d_test) - test_below]]
        p = float(fisher_exact(table, alternative="greater").pvalue)
        per[name] = {
            "near_copies": below / len(d),
            "chance": test_below / len(d_test),
            "p_value": p,
            "copies": bool(p < ALPHA),
            "median_distance": float(np.median(d)),
        }
    out["checkpoints"] = per
    return out
