"""Two numbers for what a t-SNE map shows, measured in the feature space itself (not in the 2-D
map, whose distances t-SNE distorts), each with its chance level of 0.5:

- class separation: a k-NN classifier fitted on the labelled real training features names the
  class of each synthetic image; balanced accuracy over the synthetic images (0.5: the synthetic
  classes are not told apart the way real ones are);
- real-vs-synthetic gap: a classifier two-sample test (ridge regression on standardised features,
  5-fold cross-validation) telling real training features from synthetic ones; accuracy balanced
  over the four (class, source) cells, each also weighted equally in the fit, so a synthetic set
  drawn class-balanced against an imbalanced real set is not told apart by its class mix alone
  (0.5: indistinguishable, 1.0: every synthetic image is recognisable as synthetic).

Their uncertainty comes from permutations, not from resampling images: the cross-validated
predictions of one pooled set depend on each other, so a bootstrap over them is too narrow (a
faithful second draw of real images read 0.44 [0.40, 0.49]). Each figure is recomputed with the
labels shuffled (real/synthetic for the gap, the synthetic images' classes for the separation),
by the same procedure, `PERMUTATIONS` times (the real/synthetic labels within each class). The 95% interval is the figure minus the null's
central 95% deviations from chance; it contains 0.5 exactly when a two-sided permutation test at
5% does not reject, and the one-sided p-value is reported beside it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from polypsynth.data.records import CLASSES

K = 5
CHANCE = 0.5
PERMUTATIONS = 200


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y_true, y_pred))


@dataclass(frozen=True)
class Separation:
    """A separation's balanced accuracy against its permutation null: the 95% interval of the
    accuracy (the null's spread around the point), the null's own 95% range, the p-value, the
    permutations drawn and the chance level."""

    balanced_accuracy: float
    ci95: tuple[float, float]
    null95: tuple[float, float]
    p_value: float
    permutations: int
    chance: float

    def to_dict(self) -> dict:
        return {**asdict(self), "ci95": list(self.ci95), "null95": list(self.null95)}


@dataclass(frozen=True)
class SetSeparation:
    """Both numbers of one judged set: its synthetic classes named by a k-NN on the real ones, and
    its images told from the real ones."""

    classes: Separation
    real_vs_synthetic: Separation

    def to_dict(self) -> dict:
        return {"classes": self.classes.to_dict(), "real_vs_synthetic": self.real_vs_synthetic.to_dict()}


def _with_null(point: float, null: np.ndarray) -> Separation:
    lo_dev, hi_dev = np.percentile(null - CHANCE, [2.5, 97.5])
    return Separation(
        balanced_accuracy=point,
        ci95=(float(max(0.0, point - hi_dev)), float(min(1.0, point - lo_dev))),  # an accuracy's range
        null95=(float(CHANCE + lo_dev), float(CHANCE + hi_dev)),
        p_value=float((1 + np.sum(null >= point)) / (1 + len(null))),
        permutations=len(null),
        chance=CHANCE,
    )


def _stack(sets: dict) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([sets[c] for c in CLASSES])
    y = np.concatenate([np.full(len(sets[c]), i) for i, c in enumerate(CLASSES)])
    return x, y


def _knn_names(real_f: dict, query_f: dict) -> tuple[np.ndarray, np.ndarray]:
    """The classes a k-NN fitted on labelled `real_f` gives the images of `query_f`, and their labels."""
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _stack(real_f)
    qx, qy = _stack(query_f)
    return KNeighborsClassifier(n_neighbors=min(K, len(x))).fit(x, y).predict(qx), qy


def _named(pred: np.ndarray, labels: np.ndarray, seed: int) -> Separation:
    rng = np.random.default_rng(seed)
    null = np.array([balanced_accuracy(rng.permutation(labels), pred) for _ in range(PERMUTATIONS)])
    return _with_null(balanced_accuracy(labels, pred), null)


def class_separation(real_f: dict, synthetic_f: dict, seed: int = 0) -> Separation:
    return _named(*_knn_names(real_f, synthetic_f), seed)


def split_fold(real_f: dict, fold: dict) -> tuple[dict, dict]:
    """(held-out, rest) features of one control fold (class -> row indices of real_f)."""
    held = {c: np.isin(np.arange(len(real_f[c])), fold[c]) for c in CLASSES}
    return {c: real_f[c][held[c]] for c in CLASSES}, {c: real_f[c][~held[c]] for c in CLASSES}


def control_separation(real_f: dict, folds: list[dict], seed: int = 0) -> SetSeparation:
    """Both numbers for the cross-fitted positive control: each fold's images named by a k-NN
    fitted on the rest (the predictions of every fold pooled), and the first fold told from the
    rest (with two folds the second fold's test is the same two sets)."""
    named = [_knn_names(rest, held) for held, rest in (split_fold(real_f, f) for f in folds)]
    held, rest = split_fold(real_f, folds[0])
    return SetSeparation(
        _named(np.concatenate([p for p, _ in named]), np.concatenate([y for _, y in named]), seed),
        real_vs_synthetic(rest, held, seed),
    )


def _cell_accuracy(source: np.ndarray, cls: np.ndarray, pred: np.ndarray) -> float:
    """Mean over the (class, source) cells of the share predicted right: balanced over real and
    synthetic and over the classes, so a different class mix is no evidence of a gap."""
    cells = [(source == s) & (cls == c) for s in (0, 1) for c in np.unique(cls)]
    return float(np.mean([np.mean(pred[m] == source[m]) for m in cells if m.any()]))


def _cross_validated(kernel: np.ndarray, source: np.ndarray, cls: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold predictions (0 real / 1 synthetic) of kernel ridge on a linear kernel, each
    (class, source) cell weighted equally, folds stratified by cell."""
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import StratifiedKFold

    cell = source * len(CLASSES) + cls
    counts = np.bincount(cell, minlength=2 * len(CLASSES))
    weight = 1.0 / counts[cell]
    folds = StratifiedKFold(n_splits=min(5, counts[counts > 0].min()), shuffle=True, random_state=seed)
    alpha = float(np.trace(kernel)) / len(kernel)
    pred = np.empty(len(source), int)
    for train, test in folds.split(kernel, cell):
        model = KernelRidge(alpha=alpha, kernel="precomputed")
        model.fit(kernel[np.ix_(train, train)], 2.0 * source[train] - 1, sample_weight=weight[train])
        pred[test] = model.predict(kernel[np.ix_(test, train)]) > 0
    return pred


def real_vs_synthetic(real_f: dict, synthetic_f: dict, seed: int = 0) -> Separation:
    x_real, c_real = _stack(real_f)
    x_syn, c_syn = _stack(synthetic_f)
    x = np.concatenate([x_real, x_syn]).astype(np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)  # label-free: the same for every permutation
    kernel = x @ x.T  # ridge in its dual: every permutation's fit is an n x n solve
    source = np.r_[np.zeros(len(x_real), int), np.ones(len(x_syn), int)]
    cls = np.r_[c_real, c_syn]
    rng = np.random.default_rng(seed)
    point = _cell_accuracy(source, cls, _cross_validated(kernel, source, cls, seed))
    null = []
    for _ in range(PERMUTATIONS):  # real / synthetic labels shuffled within each class
        shuffled = source.copy()
        for c in np.unique(cls):
            shuffled[cls == c] = rng.permutation(source[cls == c])
        null.append(_cell_accuracy(shuffled, cls, _cross_validated(kernel, shuffled, cls, seed)))
    return _with_null(point, np.array(null))
