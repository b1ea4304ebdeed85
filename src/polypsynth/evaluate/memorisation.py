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
itself only against the rest (each image would otherwise be its own nearest copy).

The same test runs in a third space, pixels (pixels.py), where a near-copy is the same picture:
a synthetic image, as stored or mirrored either way, within `max_distance` (correlation 0.97 of
16-px thumbnails by default, the leakage criterion) of some image of any training pool (the labelled
split, the control, and every pool given: stage 1, unlabelled, replay) or of a crop of it down to 80%
of its side. That finds the flipped and cropped copies the feature spaces miss; its chance level is
again the test images' share. The p-values of every checkpoint in every space are corrected together
(Holm) before a checkpoint is said to copy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.pixels import nearest_over

QUANTILE = 0.05
ALPHA = 0.01


def nearest_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance of each query row to its nearest reference row."""
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(query)
    return dist[:, 0]


def _against_test(d: np.ndarray, near: np.ndarray, d_test: np.ndarray, test_below: int) -> dict:
    """One set's near-copy share against the test images' own share: one-sided Fisher exact test."""
    from scipy.stats import fisher_exact

    below = int(near.sum())
    table = [[below, len(d) - below], [test_below, len(d_test) - test_below]]
    p = float(fisher_exact(table, alternative="greater").pvalue)
    return {
        "near_copies": below / len(d),
        "chance": test_below / len(d_test),
        "p_value": p,
        "copies": bool(p < ALPHA),
        "median_distance": float(np.median(d)),
    }


def check(
    train_f: dict,
    test_f: dict,
    synthetic_f: dict[str, dict],
    held_out: dict | None = None,
    control: str | None = None,
    pools: Sequence[np.ndarray] = (),
) -> dict:
    """Per checkpoint: the share of near-copies, its chance level, the Fisher p-value and the verdict
    `copies`; with the threshold and the median distances (synthetic vs real test) to the
    training images. `held_out`: the control's features, a training pool for every set but
    `control`; `pools`: the features of the other pools the model trained on (stage 1,
    unlabelled, replay), searched for every set."""
    train = np.concatenate([*[train_f[c] for c in CLASSES], *pools])
    everything = np.concatenate([train, *[held_out[c] for c in CLASSES]]) if held_out else train
    queries = {name: np.concatenate([syn[c] for c in CLASSES]) for name, syn in synthetic_f.items()}
    test = np.concatenate([test_f[c] for c in CLASSES])
    d_test = nearest_distances(test, everything)
    threshold = float(np.quantile(d_test, QUANTILE))
    distances = {
        name: nearest_distances(q, train if name == control else everything) for name, q in queries.items()
    }
    return _check(d_test, distances, threshold) | {"quantile": QUANTILE}


def _check(d_test: np.ndarray, distances: dict[str, np.ndarray], threshold: float) -> dict:
    """Per query set: the share of its nearest distances below `threshold` and the Fisher test
    against the test images' own distances `d_test`."""
    test_below = int((d_test < threshold).sum())
    per = {name: _against_test(d, d < threshold, d_test, test_below) for name, d in distances.items()}
    return {"median_test_distance": float(np.median(d_test)), "threshold": threshold, "checkpoints": per}


def pixel_check(found: dict, test: str, max_distance: float, control: str | None = None) -> dict:
    """`check` in pixel space over pixels.search's answer `found` (query set -> pool -> Nearest),
    near-copies being within `max_distance`; the test images are the query set `test`; the control
    is searched in every pool but its own (the pool named `control`)."""
    distances = {
        name: nearest_over(per_pool, skip=control if name == control else None)
        for name, per_pool in found.items()
        if name != test
    }
    threshold = np.nextafter(max_distance, np.inf)  # within max_distance: d <= max_distance
    return _check(nearest_over(found[test]), distances, float(threshold)) | {
        "threshold": max_distance,
        "quantile": None,
    }


def correct(memo: dict[str, dict]) -> dict[str, dict]:
    """Holm's correction over every (space, checkpoint) p-value; `copies` then means the adjusted
    p-value is below ALPHA (each entry keeps its raw p-value and gains `p_adjusted`)."""
    keys = [(space, name) for space, m in memo.items() for name in m["checkpoints"]]
    p = np.array([memo[s]["checkpoints"][n]["p_value"] for s, n in keys])
    order = np.argsort(p)
    adjusted = np.empty(len(p))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    for (space, name), a in zip(keys, adjusted, strict=True):
        entry = memo[space]["checkpoints"][name]
        entry["p_adjusted"] = float(a)
        entry["copies"] = bool(a < ALPHA)
    return memo
