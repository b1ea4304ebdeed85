"""`polypsynth evaluate`: every checkpoint's synthetic images against the real data.

`evaluate` runs its phases in order: the inputs (the generator's resolution and view, through
which every image goes; the real train split cut into the positive control's folds), leakage and
the copy search (copies.py), features and KIDs, memorisation, t-SNE and separation, Table 1 with
its controls and class fidelity (augment.py), and the selection with its verdict. The control is
judged by the same code as every checkpoint, fold by fold against the rest of the real images: it
is one more `Checkpoint` (sets.control_checkpoint)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from polypsynth.data.records import CLASSES
from polypsynth.errors import EvalError
from polypsynth.evaluate import augment, copies, kid, selection, separation, tsne
from polypsynth.evaluate.features import (
    EfficientNetExtractor,
    Extractor,
    FeatureScale,
    GeneratorView,
    InceptionExtractor,
)
from polypsynth.evaluate.inputs import Inputs, Space
from polypsynth.evaluate.kid import KidTable
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.picks import Selection
from polypsynth.evaluate.results import Evaluation, Fidelity, Leakage, counts
from polypsynth.evaluate.separation import split_fold
from polypsynth.evaluate.sets import (
    CONTROL,
    Checkpoint,
    RealData,
    control_checkpoint,
    control_folds,
    generator_resolution,
)
from polypsynth.evaluate.table1 import Table1
from polypsynth.evaluate.uncertainty import check_test_split

LesionOf = Callable[[Path], str]


def _inputs(
    real: RealData,
    checkpoints: list[Checkpoint],
    options: EvalOptions,
    reconstructions: dict[str, list[Path]] | None,
    progress: bool,
    *,
    lesion_of: LesionOf | None,
) -> Inputs:
    if reconstructions is not None:
        empty = [c for c in CLASSES if not reconstructions.get(c)]
        if empty:
            raise EvalError(f"reconstructions hold no {', '.join(empty)} images; every class needs some")
    check_test_split(counts(real.test))
    for ck in checkpoints:
        for c in CLASSES:
            if len(ck.images[c]) < kid.MIN_IMAGES:
                raise EvalError(
                    f"checkpoint {ck.name} has {len(ck.images[c])} {c} images; its KIDs need at least "
                    f"{kid.MIN_IMAGES} per class (sample more images)"
                )
    generated = [ck.images for ck in checkpoints] + ([reconstructions] if reconstructions else [])
    resolution = generator_resolution(generated, options.resolution)  # the caller's options stay as given
    real = control_folds(real, options.control_folds, options.seed, lesion_of)
    judged = [*checkpoints, control_checkpoint(real)]
    return Inputs(options, real, checkpoints, judged, resolution, GeneratorView(resolution), progress)


def _extractors(options: EvalOptions) -> dict[str, Extractor]:
    return {
        name: InceptionExtractor(options.inception_weights, options.device)
        if name == "inception"
        else EfficientNetExtractor(options.classifier.weights, options.device)
        for name in options.features
    }


def _space(inputs: Inputs, name: str, extractor: Extractor, pools: dict[str, list[Path]]) -> Space:
    """Every set's features in one space (through the generator's view). A space with no standard
    scale (not Inception) gets one fixed on the real reference (FeatureScale)."""

    def feats(paths, desc):
        return inputs.features(extractor, paths, f"{name} {desc}")

    real, test = inputs.real.train, inputs.real.test
    train = {c: feats(real[c], f"real {c}") for c in CLASSES}
    space = Space(
        train,
        {c: feats(test[c], f"real test {c}") for c in CLASSES},
        {ck.name: {c: feats(ck.images[c], f"{ck.name} {c}") for c in CLASSES} for ck in inputs.checkpoints}
        | {CONTROL: train},  # the control's images are the train split's
        [feats(paths, f"pool {pool}") for pool, paths in pools.items()],
    )
    if name == "inception":
        return space
    scale = FeatureScale(np.concatenate(list(space.real.values())))
    scaled = {c: scale(v) for c, v in space.real.items()}
    return Space(
        scaled,
        {c: scale(v) for c, v in space.test.items()},
        {k: {c: scale(v) for c, v in f.items()} for k, f in space.synthetic.items() if k != CONTROL}
        | {CONTROL: scaled},
        [scale(v) for v in space.pools],
    )


def _kids(inputs: Inputs, space: Space) -> dict[str, KidTable]:
    """KID x4, the two class margins and their sum of every checkpoint in one space; the control's
    cross-fitted, each fold against the rest of the real train split."""
    block, seed = inputs.options.kid_block_size, inputs.options.seed
    out = {
        ck.name: kid.kid_table(space.real, space.synthetic[ck.name], block, seed) for ck in inputs.checkpoints
    }
    folds = [split_fold(space.real, fold) for fold in inputs.real.folds]
    out[CONTROL] = kid.cross_fitted([kid.kid_table(rest, held, block, seed) for held, rest in folds])
    return out


def _maps_and_separations(
    space: Space, inputs: Inputs
) -> tuple[dict[str, tsne.TsneMap], dict[str, separation.SetSeparation]]:
    """Per checkpoint its t-SNE map and the two separation numbers (permutation nulls), and the
    control's numbers: a third of an evaluation's time, so with its own progress bar."""
    seed = inputs.options.seed
    maps, out = {}, {}
    bar = tqdm(inputs.judged, desc="t-SNE and separation", unit="set", disable=not inputs.progress)
    for ck in bar:
        if ck.control:
            out[CONTROL] = separation.control_separation(space.real, inputs.real.folds, seed)
            continue
        synthetic = space.synthetic[ck.name]
        groups = {"real AD": space.real["AD"], "real NON_AD": space.real["NON_AD"]}
        maps[ck.name] = tsne.embed(
            {**groups, "synthetic AD": synthetic["AD"], "synthetic NON_AD": synthetic["NON_AD"]}, seed=seed
        )
        out[ck.name] = separation.SetSeparation(
            separation.class_separation(space.real, synthetic, seed),
            separation.real_vs_synthetic(space.real, synthetic, seed),
        )
    return maps, out


def _fidelity(inputs: Inputs, spaces, extractors, table, models, *, bank, reconstructions) -> Fidelity:
    """Class fidelity by the Inception probe when its features exist, else by Table 1's EfficientNets."""
    if "inception" not in spaces:
        real_models, fold_models = models
        return augment.vote_fidelity(
            inputs, table, real_models, fold_models, bank, reconstructions=reconstructions
        )
    rec_f = None
    if reconstructions:
        rec_f = {
            c: inputs.features(
                extractors["inception"], reconstructions[c], f"inception reconstructed test {c}"
            )
            for c in CLASSES
        }
    return augment.probe_fidelity(inputs, spaces["inception"], rec_f, reconstructions)


def _select(
    inputs: Inputs,
    kids: dict[str, KidTable],
    fidelity: Fidelity,
    table: Table1,
    memo: dict,
    *,
    leaks: Leakage,
) -> Selection:
    """Both rules' picks and the verdict (selection.select), warned when test images leak."""
    judged = {ck.name: counts(ck.images) for ck in inputs.judged}
    chosen = selection.select(
        kids,
        fidelity=selection.fidelity_inputs(
            fidelity.shares, fidelity.judge, judged, {CONTROL: fidelity.control_judge}
        ),
        gains=table.gains or None,
        gains_by=f"{table.classifier}, fine-tuned",
        copies=copies.copying(memo, inputs.judged),
        control=CONTROL,
        negative=table.swapped or None,
        min_gain=inputs.options.min_gain,
        seed=inputs.options.seed,
    )
    if not leaks.pairs:
        return chosen
    return replace(
        chosen,
        verdict=f"WARNING: {len(leaks.pairs)} near-duplicate pair(s) link test images to training images, so "
        f"every figure below is optimistic. {chosen.verdict}",
    )


def evaluate(
    real: RealData,
    checkpoints: list[Checkpoint],
    options: EvalOptions,
    *,
    progress: bool = True,
    reconstructions: dict[str, list[Path]] | None = None,
    train_pools: dict[str, list[Path]] | None = None,
    lesion_of: LesionOf | None = None,
) -> Evaluation:
    """All the numbers of the report (plots are drawn from them by report.py). `reconstructions`:
    class -> real test images passed through the model's autoencoder (reconstruct.py), whose class
    fidelity is reported beside the checkpoints' (a reference, not a bound). `train_pools`: pool
    name -> the other images the model trained on (stage 1, unlabelled, replay); with the real
    training split they are searched for near-duplicates of the test images first (leakage is an
    error unless `options.allow_leakage`). `lesion_of`: the lesion an image shows
    (sets.lesion_groups), when the data names one: the control's folds keep a lesion whole, and a
    lesion with both train and test images is leakage."""
    options.validate()
    pools = train_pools or {}
    inputs = _inputs(real, checkpoints, options, reconstructions, progress, lesion_of=lesion_of)
    found = copies.copy_search(inputs, pools)
    lesions = copies.lesion_pairs(inputs.real, lesion_of)
    leaks = copies.find_leakage(inputs.real, pools, found, options, progress, lesions=lesions)
    extractors = _extractors(options)
    searched = {n: p for n, p in pools.items() if p} if options.pool_features else {}
    spaces = {name: _space(inputs, name, ex, searched) for name, ex in extractors.items()}
    kids = {name: _kids(inputs, space) for name, space in spaces.items()}
    memo = copies.memorisation_checks(inputs, spaces, found)
    primary = spaces[options.features[0]]
    table, real_models, fold_models, bank = augment.efficientnet_table(inputs)
    fidelity = _fidelity(
        inputs,
        spaces,
        extractors,
        table,
        (real_models, fold_models),
        bank=bank,
        reconstructions=reconstructions,
    )
    maps, separations = _maps_and_separations(primary, inputs)
    return Evaluation(
        options=options,
        resolution=inputs.resolution,
        real=inputs.real,
        checkpoints=checkpoints,
        control=inputs.control,
        leakage=leaks,
        kid=kids,
        kid_scale={
            name: kid.real_scale(space.real, options.kid_block_size, options.seed)
            for name, space in spaces.items()
        },
        maps=maps,
        separation=separations,
        memorisation=memo,
        fidelity=fidelity,
        classification=table,
        selection=_select(inputs, kids[options.features[0]], fidelity, table, memo, leaks=leaks),
    )
