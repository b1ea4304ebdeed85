"""Two numbers for what a t-SNE map shows, measured in the feature space itself (not in the 2-D
map, whose distances t-SNE distorts), each with its chance level of 0.5:

- class separation: a k-NN classifier fitted on the labelled real training features names the
  class of each synthetic image; balanced accuracy over the synthetic images (0.5: the synthetic
  classes are not told apart the way real ones are);
- real-vs-synthetic gap: a classifier two-sample test (logistic regression, stratified 5-fold
  cross-validation) telling real training features from synthetic ones; balanced accuracy (0.5:
  indistinguishable, 1.0: every synthetic image is recognisable as synthetic).

Both come with a 95% bootstrap interval over images."""

from __future__ import annotations

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate.classify import balanced_accuracy_rows

K = 5
CHANCE = 0.5


def _with_interval(y_true: np.ndarray, y_pred: np.ndarray, n: int = 1000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), (n, len(y_true)))
    draws = balanced_accuracy_rows(y_true[idx], y_pred[idx])
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    point = balanced_accuracy_rows(y_true[None], y_pred[None])[0]
    return {"balanced_accuracy": float(point), "ci95": [float(lo), float(hi)], "chance": CHANCE}


def _stack(sets: dict) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([sets[c] for c in CLASSES])
    y = np.concatenate([np.full(len(sets[c]), i) for i, c in enumerate(CLASSES)])
    return x, y


def class_separation(real_f: dict, synthetic_f: dict, seed: int = 0) -> dict:
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _stack(real_f)
    sx, sy = _stack(synthetic_f)
    pred = KNeighborsClassifier(n_neighbors=min(K, len(x))).fit(x, y).predict(sx)
    return _with_interval(sy, pred, seed=seed)


def real_vs_synthetic(real_f: dict, synthetic_f: dict, seed: int = 0) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    real = np.concatenate([real_f[c] for c in CLASSES])
    syn = np.concatenate([synthetic_f[c] for c in CLASSES])
    x = np.concatenate([real, syn])
    y = np.r_[np.zeros(len(real), int), np.ones(len(syn), int)]
    folds = StratifiedKFold(n_splits=min(5, len(syn), len(real)), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
    pred = cross_val_predict(model, x, y, cv=folds)
    return _with_interval(y, pred, seed=seed)
