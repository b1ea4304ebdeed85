"""The evaluation's classifier phases (run.py): Table 1 with its controls for the fine-tuned
EfficientNet and for the linear probe on Inception features (table1.py), and class fidelity.

Each checkpoint's fidelity is judged by classifiers trained on the whole real train split; the
cross-fitted control's, fold by fold, by those trained without that fold (the control's own
judges, whose recall on the test images is its threshold)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate import backbone, classify, probe, table1
from polypsynth.evaluate.classify import ClassifierRun, Row
from polypsynth.evaluate.inputs import Inputs, Space, labelled, recognised, swap
from polypsynth.evaluate.picks import Judge
from polypsynth.evaluate.probe import ProbeExperiments
from polypsynth.evaluate.results import Fidelity, counts
from polypsynth.evaluate.separation import split_fold
from polypsynth.evaluate.sets import CONTROL


def _plan(inputs: Inputs, swap_control: list[str], n_synthetic: int) -> table1.Plan:
    o = inputs.options
    return table1.Plan(
        seeds=o.classify_seeds,
        base_seed=o.seed,
        n_synthetic=n_synthetic,
        folds=len(inputs.real.folds),
        swap_control=swap_control,
        min_gain=o.min_gain,
        seed_sd=o.seed_sd,
    )


def probe_experiments(inputs: Inputs, space: Space, reconstructed_f: dict | None = None) -> ProbeExperiments:
    """The linear probe on Inception features: Table 1 with its controls (table1.py), the fidelity
    of each judged set (see probe.py), its recall on real test images (the fidelity threshold) and,
    given reconstruction features, its fidelity on real test images after the autoencoder."""
    test_list, test_y = labelled(space.test)
    test_x = np.asarray(test_list)
    train_x, train_y = labelled(space.real)
    judge, _ = probe.run(np.asarray(train_x), train_y, test_x, test_y)
    fidelity = {
        ck.name: recognised(lambda x: probe.predict(judge, x), space.synthetic[ck.name])
        for ck in inputs.checkpoints
    }
    folds = [split_fold(space.real, fold) for fold in inputs.real.folds]
    fold_runs = [
        probe.run(np.asarray(labelled(rest)[0]), labelled(rest)[1], test_x, test_y) for _, rest in folds
    ]
    fidelity[CONTROL] = _pooled(
        [
            recognised(lambda x, m=m: probe.predict(m, x), held)
            for (held, _), (m, _) in zip(folds, fold_runs, strict=True)
        ],
        [held for held, _ in folds],
    )
    reconstructed = (
        recognised(lambda x: probe.predict(judge, x), reconstructed_f) if reconstructed_f else None
    )

    def run_augmented(ck, pick, _seed, swapped):
        sx, sy = labelled(space.synthetic[ck.name], pick)
        x = np.concatenate([np.asarray(train_x), np.asarray(sx)])
        return probe.run(x, train_y + (swap(sy) if swapped else sy), test_x, test_y)[1]

    table = table1.run_table(
        inputs.checkpoints,
        _plan(inputs, [ck.name for ck in inputs.checkpoints], inputs.synthetic_count),  # cheap: every swap
        lambda _seed: probe.run(np.asarray(train_x), train_y, test_x, test_y)[1],  # the fit is deterministic
        run_augmented if inputs.options.augment else None,
        run_base=lambda f, _seed: fold_runs[f][1],
        control=CONTROL,
    )
    return ProbeExperiments(table, fidelity, reconstructed)


def _pooled(shares: list[dict[str, float]], held: list[dict]) -> dict[str, float]:
    """Per class, the share over every fold's images (each fold's share weighted by its size)."""
    return {
        c: float(
            sum(s[c] * len(h[c]) for s, h in zip(shares, held, strict=True)) / sum(len(h[c]) for h in held)
        )
        for c in CLASSES
    }


def efficientnet_table(inputs: Inputs) -> tuple[table1.Table1, list, list[list], classify.ImageBank]:
    """Table 1 with the fine-tuned ImageNet EfficientNet (classify.py) and its controls; also
    returns the whole-split models and each control fold's models (the fidelity judges when no
    Inception features are computed) and the decoded images they were trained on."""
    options, real = inputs.options, inputs.real
    copts = options.classifier
    bank = classify.ImageBank(copts.image_size, inputs.view)
    test_paths, test_labels = labelled(real.test)
    models: list = []
    fold_models: list[list] = [[] for _ in real.folds]
    runs = options.classify_seeds * (
        1 + len(real.folds) + (len(inputs.checkpoints) + 1 if options.augment else 0)
    )
    counter = iter(range(1, runs + 1))

    def fit(sets, extra, seed, desc):
        paths, labels = labelled(sets)
        desc = f"classifier {next(counter)} of {runs}: {desc}"
        model = classify.train_classifier(
            paths + extra[0], labels + extra[1], copts, seed, bank, desc=desc, progress=inputs.progress
        )
        return model, ClassifierRun.judged(test_labels, classify.predict(model, test_paths, bank))

    def run_real(seed):
        model, run = fit(real.train, ([], []), seed, f"real, seed {seed}")
        models.append(model)
        return run

    def run_base(f, seed):
        model, run = fit(real.rest(f), ([], []), seed, f"real without control fold {f + 1}, seed {seed}")
        fold_models[f].append(model)
        return run

    def run_augmented(ck, pick, seed, swapped):
        syn_paths, syn_labels = labelled(ck.images, pick)
        desc = f"real+{ck.name}{' swapped' if swapped else ''}, seed {seed}"
        return fit(real.train, (syn_paths, swap(syn_labels) if swapped else syn_labels), seed, desc)[1]

    table = table1.run_table(
        inputs.checkpoints,
        _plan(
            inputs, [inputs.checkpoints[-1].name], inputs.synthetic_count
        ),  # the costliest control: the last one
        run_real,
        run_augmented if options.augment else None,
        run_base=run_base,
        control=CONTROL,
    )
    return replace(table, classifier=backbone.describe(copts.weights)), models, fold_models, bank


def judge_of(kind: str, row: Row | None, test: dict[str, list[Path]]) -> Judge:
    """The judge that is `row`'s classifier: its balanced accuracy and recall of each class on the
    real test images (the fidelity threshold)."""
    if row is None:
        raise ValueError(f"the judge {kind!r} needs its Table 1 row (the control's folds were not run)")
    return Judge(row.recall, counts(test), kind, row.balanced_accuracy)


def probe_fidelity(inputs: Inputs, space: Space, reconstructed_f: dict | None, reconstructions) -> Fidelity:
    """Class fidelity judged by the linear probe on Inception features, with the probe's Table 1."""
    probes = probe_experiments(inputs, space, reconstructed_f)
    kind = "linear probe on Inception features"
    test = inputs.real.test
    return Fidelity(
        probes.fidelity,
        judge_of(kind, probes.table.real, test),
        probes.reconstructed,
        counts(reconstructions) if reconstructions else None,
        probes,
        judge_of(f"{kind}, each fold's fitted without it", probes.table.control_base, test),
    )


def vote_fidelity(
    inputs: Inputs, table: table1.Table1, models: list, fold_models: list[list], bank, *, reconstructions
) -> Fidelity:
    """Class fidelity judged by the real-only EfficientNets of Table 1 (no Inception features)."""

    def vote(judges, sets):  # the share of the judges' answers that name each class
        votes = [recognised(partial(classify.predict, m, bank=bank), sets) for m in judges]
        return {c: float(np.mean([v[c] for v in votes])) for c in CLASSES}

    held = [inputs.real.fold(f) for f in range(len(fold_models))]
    shares = {ck.name: vote(models, ck.images) for ck in inputs.checkpoints}
    shares[CONTROL] = _pooled([vote(fm, h) for fm, h in zip(fold_models, held, strict=True)], held)
    kind = f"{table.classifier} fine-tuned on real images"
    test = inputs.real.test
    return Fidelity(
        shares,
        judge_of(kind, table.real, test),
        vote(models, reconstructions) if reconstructions else None,
        counts(reconstructions) if reconstructions else None,
        None,
        judge_of(f"{kind}, each fold's without it", table.control_base, test),
    )
