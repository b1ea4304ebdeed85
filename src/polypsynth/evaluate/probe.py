"""Linear probe on frozen pretrained Inception features (scikit-learn logistic regression).

Two jobs, both cheap because the features are already extracted for KID:
- the class-fidelity judge: a classifier whose features were learnt on ImageNet, so it does not
  need thousands of labelled polyps to mean something (an EfficientNet-B0 trained from scratch on
  a few hundred images stays near chance); its own balanced accuracy on the real test split is
  reported beside every fidelity figure;
- a second augmentation experiment beside the study's Table 1: the same probe trained on real
  features only and on real + synthetic features, judged on the real test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polypsynth.evaluate.classify import ClassifierRun
from polypsynth.evaluate.table1 import Table1

C = 0.1  # inverse L2 strength on standardised 2048-d features; stable from 0.01 to 1 on the phantom


def fit(features: np.ndarray, labels: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"a probe needs both classes in its training labels, got only {np.unique(labels)}")
    model = LogisticRegression(C=C, max_iter=5000, class_weight="balanced")
    return make_pipeline(StandardScaler(), model).fit(np.asarray(features, np.float64), labels)


def predict(probe, features: np.ndarray) -> np.ndarray:
    return probe.predict(np.asarray(features, np.float64))


def run(train_f, train_y, test_f, test_y) -> tuple[object, ClassifierRun]:
    """Fit on (train_f, train_y), judge on the test split: the probe and its run."""
    probe = fit(train_f, train_y)
    return probe, ClassifierRun.judged(test_y, predict(probe, test_f))


@dataclass(frozen=True)
class ProbeExperiments:
    """The probe's Table 1, the share of each judged set it names as each class (its fidelity) and,
    given reconstructions, its fidelity on the real test images after the autoencoder."""

    table: Table1
    fidelity: dict[str, dict[str, float]]
    reconstructed: dict[str, float] | None

    def to_dict(self) -> dict:
        return {
            "features": "inception",
            "fidelity": self.fidelity,
            "reconstructed": self.reconstructed,
            **self.table.to_dict(),
        }
