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

The same test runs in a third space, perceptual hashes (`hash_check`): a synthetic image is a
near-copy when it, or its mirror image either way, lies within `max_distance` bits of any image of
any training pool (the labelled split, the control, and every pool given: stage 1, unlabelled,
replay), which finds flipped copies the feature spaces miss. The p-values of every checkpoint in
every space are corrected together (Holm) before a checkpoint is said to copy."""

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
) -> dict:
    """Per checkpoint: the share of near-copies, its chance level, the Fisher p-value and the verdict
    `copies`; with the threshold and the median distances (synthetic vs real test) to the
    training images. `held_out`: the control's features, a training pool for every set but
    `control`."""
    train = np.concatenate([train_f[c] for c in CLASSES])
    everything = np.concatenate([train, *[held_out[c] for c in CLASSES]]) if held_out else train
    queries = {name: np.concatenate([syn[c] for c in CLASSES]) for name, syn in synthetic_f.items()}
    test = np.concatenate([test_f[c] for c in CLASSES])
    d_test = nearest_distances(test, everything)
    threshold = float(np.quantile(d_test, QUANTILE))
    return _check(nearest_distances, d_test, queries, train, everything, control, lambda d: d < threshold) | {
        "threshold": threshold,
        "quantile": QUANTILE,
    }


def _check(nearest, d_test: np.ndarray, queries: dict, own_pool, everything, control, near) -> dict:
    """Per query set: its nearest distances to `everything` the model trained on (the control to
    `own_pool`, without itself), the share `near` and the Fisher test against the test images'
    own distances `d_test`."""
    test_below = int(near(d_test).sum())
    per = {}
    for name, q in queries.items():
        d = nearest(q, own_pool if name == control else everything)
        per[name] = _against_test(d, near(d), d_test, test_below)
    return {"median_test_distance": float(np.median(d_test)), "checkpoints": per}


def nearest_hash_distances(query_flips: np.ndarray, reference: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Per query image, the Hamming distance from its nearest reference hash over all its flips."""
    out = np.empty(len(query_flips), int)
    for start in range(0, len(query_flips), chunk):
        q = query_flips[start : start + chunk]  # (n, flips)
        d = np.bitwise_count(q[:, :, None] ^ reference[None, None, :])
        out[start : start + chunk] = d.min(axis=(1, 2))
    return out


def hash_check(
    pool: np.ndarray,
    test_flips: np.ndarray,
    sets_flips: dict[str, np.ndarray],
    max_distance: int,
    held_out: np.ndarray | None = None,
    control: str | None = None,
) -> dict:
    """`check` in perceptual-hash space: `pool` the hashes of every training image but the
    control's (`held_out`), `*_flips` (N, flips) hashes of each query image and its mirrors."""
    everything = np.concatenate([pool, held_out]) if held_out is not None else pool
    d_test = nearest_hash_distances(test_flips, everything)
    near = lambda d: d <= max_distance  # noqa: E731
    return _check(nearest_hash_distances, d_test, sets_flips, pool, everything, control, near) | {
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
