"""The Inception linear probe: fidelity and augmentation on features whose answer is known."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from polypsynth.evaluate import probe
from polypsynth.evaluate.augment import probe_experiments
from polypsynth.evaluate.inputs import Inputs, Space
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.sets import CONTROL, Checkpoint, RealData, control_checkpoint


def _gauss(rng, centre, n, dim=16):
    return rng.normal(centre, 1.0, (n, dim)).astype(np.float32)


def test_probe_fidelity_and_augmentation_on_known_features():
    rng = np.random.default_rng(0)
    ad, non = np.full(16, 0.4), np.full(16, -0.4)  # overlapping classes: real-only accuracy < 1
    real = {"AD": _gauss(rng, ad, 20), "NON_AD": _gauss(rng, non, 10)}
    test = {"AD": _gauss(rng, ad, 200), "NON_AD": _gauss(rng, non, 200)}
    faithful = {"AD": _gauss(rng, ad, 60), "NON_AD": _gauss(rng, non, 60)}
    swapped = {"AD": faithful["NON_AD"], "NON_AD": faithful["AD"]}
    cks = [
        Checkpoint("good", 1, {c: [f"g{c}{i}" for i in range(60)] for c in faithful}),
        Checkpoint("swapped", 2, {c: [f"s{c}{i}" for i in range(60)] for c in faithful}),
    ]
    folds = [{c: np.arange(k, len(v), 2) for c, v in real.items()} for k in (0, 1)]  # two folds
    real_data = RealData({c: [f"r{c}{i}" for i in range(len(v))] for c, v in real.items()}, {}, folds)
    options = EvalOptions(classify_seeds=3, synthetic_share=2.0)  # 60 synthetic images added to 30 real
    inputs = Inputs(options, real_data, cks, [*cks, control_checkpoint(real_data)], 32, None, False)
    space = Space(real, test, {"good": faithful, "swapped": swapped, CONTROL: real}, [])
    out = probe_experiments(inputs, space, reconstructed_f=swapped)  # an autoencoder that swapped the classes
    # Fidelity: the real-data probe recognises faithful classes and rejects swapped ones.
    assert out.fidelity["good"]["AD"] > 0.6 and out.fidelity["good"]["NON_AD"] > 0.6
    assert out.fidelity["swapped"]["AD"] < 0.4 and out.fidelity["swapped"]["NON_AD"] < 0.4
    # The same judge on reconstructed real images: here the swapped set's figures.
    assert out.reconstructed == out.fidelity["swapped"]
    # The real-only figure equals an independent fit with the same estimator on the same data.
    x = np.concatenate([real["AD"], real["NON_AD"]])
    y = np.r_[np.zeros(20), np.ones(10)]
    tx, ty = np.concatenate([test["AD"], test["NON_AD"]]), np.r_[np.zeros(200), np.ones(200)]
    expected = balanced_accuracy_score(ty, probe.fit(x, y).predict(tx))
    assert out.table.real.balanced_accuracy.mean == pytest.approx(expected)
    # Augmentation: faithful synthetic features help a probe starved of real data; swapped labels hurt.
    assert out.table.gains["good"].mean > 0
    assert out.table.gains["swapped"].mean < -0.1 and out.table.gains["swapped"].ci95[1] < 0
    assert out.table.augmented["good"].seeds == 3
    # Controls: the faithful set with its labels swapped hurts (the probe reads the synthetic labels).
    assert out.table.gains["swapped"].word in ("harms", "does not help", "cannot tell")
    # The cross-fitted control: each fold's probe trained on the other fold judges the held-out
    # images; the whole split's probe minus the fold probes' mean is its gain.
    assert set(out.fidelity) == {"good", "swapped", CONTROL} and out.fidelity[CONTROL]["AD"] > 0.5
    assert out.table.control_base.folds == 2 and CONTROL in out.table.gains
    halves = [
        balanced_accuracy_score(
            ty,
            probe.fit(
                np.concatenate([real["AD"][k::2], real["NON_AD"][k::2]]), np.r_[np.zeros(10), np.ones(5)]
            ).predict(tx),
        )
        for k in (1, 0)
    ]
    assert out.table.gains[CONTROL].mean == pytest.approx(expected - np.mean(halves))
    assert out.table.swapped["good"].ci95[1] < 0
    assert out.table.swapped["swapped"].mean > 0  # swapping a swapped set restores it


def test_probe_needs_both_classes():
    with pytest.raises(ValueError, match=r"a probe needs both classes in its training labels"):
        probe.fit(np.zeros((4, 3)), np.zeros(4))
