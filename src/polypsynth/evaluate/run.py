"""`polypsynth evaluate`: every checkpoint's synthetic images against the real data.

`evaluate` runs its phases in order, each a function below: the inputs (the generator's resolution
and view, through which every image goes; the positive control held out of the real train split),
leakage, features and KIDs, memorisation, t-SNE and separation, Table 1 with its controls, class
fidelity, and the selection with its verdict. The control is judged by the same code as every
checkpoint: it is one more `Checkpoint` (sets.control_checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from polypsynth.data.inspect import FLIPS, hash_flips, leakage
from polypsynth.data.records import CLASSES
from polypsynth.errors import EvalError
from polypsynth.evaluate import (
    backbone,
    classify,
    kid,
    memorisation,
    pixels,
    probe,
    selection,
    separation,
    table1,
    tsne,
)
from polypsynth.evaluate.features import (
    EfficientNetExtractor,
    Extractor,
    FeatureScale,
    GeneratorView,
    InceptionExtractor,
    extract,
)
from polypsynth.evaluate.kid import KidTable
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.results import Evaluation, Fidelity, Leakage, counts
from polypsynth.evaluate.sets import (
    CONTROL,
    Checkpoint,
    RealData,
    control_checkpoint,
    generator_resolution,
    hold_out_control,
)


@dataclass(frozen=True)
class _Inputs:
    """What every phase reads: the options, the real sets once the control is held out, the
    checkpoints, the sets judged (every checkpoint, then the control) and the generator's view."""

    options: EvalOptions
    real: RealData
    checkpoints: list[Checkpoint]
    judged: list[Checkpoint]
    resolution: int
    view: GeneratorView
    progress: bool

    @property
    def synthetic_count(self) -> int:
        """Synthetic images added to the real training split in an augmentation run."""
        return round(self.options.synthetic_share * sum(len(v) for v in self.real.train.values()))

    def features(self, extractor: Extractor, paths: list[Path], desc: str) -> np.ndarray:
        cache = Path(self.options.cache_dir) if self.options.cache_dir else None
        return extract(extractor, paths, cache, desc, progress=self.progress, view=self.view)


@dataclass(frozen=True)
class _Space:
    """One feature space's features: class -> (N, d) for the real train and test splits, judged
    set -> class -> (N, d) for the synthetic sets, and the extra training pools' (copy check)."""

    real: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    synthetic: dict[str, dict[str, np.ndarray]]
    pools: list[np.ndarray]


def _inputs(
    real: RealData,
    checkpoints: list[Checkpoint],
    options: EvalOptions,
    reconstructions: dict[str, list[Path]] | None,
    progress: bool,
) -> _Inputs:
    if reconstructions is not None:
        empty = [c for c in CLASSES if not reconstructions.get(c)]
        if empty:
            raise EvalError(f"reconstructions hold no {', '.join(empty)} images; every class needs some")
    generated = [ck.images for ck in checkpoints] + ([reconstructions] if reconstructions else [])
    resolution = generator_resolution(generated, options.resolution)  # the caller's options stay as given
    real = hold_out_control(real, checkpoints, options.control_share, options.seed)
    judged = [*checkpoints, control_checkpoint(real)]
    return _Inputs(options, real, checkpoints, judged, resolution, GeneratorView(resolution), progress)


def _labelled(sets: dict[str, list], picks: dict[str, np.ndarray] | None = None) -> tuple[list, list[int]]:
    """Items and labels (index into CLASSES) of class -> items, optionally only the picked indices."""
    chosen = {c: [sets[c][i] for i in picks[c]] if picks else list(sets[c]) for c in CLASSES}
    items = [x for c in CLASSES for x in chosen[c]]
    labels = [i for i, c in enumerate(CLASSES) for _ in chosen[c]]
    return items, labels


def _swap(labels: list[int]) -> list[int]:
    return [len(CLASSES) - 1 - y for y in labels]


def recognised(predict, sets: dict) -> dict[str, float]:
    """Per class, the share of a set that `predict` assigns to that class (class fidelity)."""
    return {c: float((np.asarray(predict(sets[c])) == i).mean()) for i, c in enumerate(CLASSES)}


def _probe_experiments(real_f, test_f, synthetic_f, judged, options, n_syn, reconstructed_f=None) -> dict:
    """The linear probe on Inception features: Table 1 with its controls (table1.py), the fidelity
    of each judged set (see probe.py), its recall on real test images (the fidelity threshold) and,
    given reconstruction features, its fidelity on real test images after the autoencoder."""
    test_list, test_y = _labelled(test_f)
    test_x = np.asarray(test_list)
    train_x, train_y = _labelled(real_f)
    judge, _ = probe.run(np.asarray(train_x), train_y, test_x, test_y)
    fidelity = {ck.name: recognised(lambda x: probe.predict(judge, x), synthetic_f[ck.name]) for ck in judged}
    reconstructed = (
        recognised(lambda x: probe.predict(judge, x), reconstructed_f) if reconstructed_f else None
    )

    def run_real(_seed):  # the fit is deterministic
        return probe.run(np.asarray(train_x), train_y, test_x, test_y)[1]

    def run_augmented(ck, pick, _seed, swap):
        sx, sy = _labelled(synthetic_f[ck.name], pick)
        x = np.concatenate([np.asarray(train_x), np.asarray(sx)])
        return probe.run(x, train_y + (_swap(sy) if swap else sy), test_x, test_y)[1]

    table = table1.run_table(
        judged,
        options.classify_seeds,
        options.seed,
        n_syn,
        run_real,
        run_augmented if options.augment else None,
        swap_control=[ck.name for ck in judged if not ck.control],  # cheap: every checkpoint
        margin=options.margin,
    )
    return {"features": "inception", "fidelity": fidelity, "reconstructed": reconstructed, **table}


def _efficientnet_table(inputs: _Inputs) -> tuple[dict, list, classify.ImageBank]:
    """Table 1 with the fine-tuned ImageNet EfficientNet (classify.py) and its controls; also
    returns the real-only models (the fidelity judges when no Inception features are computed) and
    the decoded images they were trained on (reused, not decoded again, by those judges)."""
    options, real, judged = inputs.options, inputs.real, inputs.judged
    copts = options.classifier
    bank = classify.ImageBank(copts.image_size, inputs.view)
    test_paths, test_labels = _labelled(real.test)
    models = []
    runs = options.classify_seeds * (1 + (len(judged) + 1 if options.augment else 0))
    counter = iter(range(1, runs + 1))

    def fit(paths, labels, seed, desc):
        desc = f"classifier {next(counter)} of {runs}: {desc}"
        model = classify.train_classifier(paths, labels, copts, seed, bank, desc, inputs.progress)
        pred = classify.predict(model, test_paths, bank)
        run = {
            "metrics": classify.classification_metrics(test_labels, pred),
            "y_true": np.asarray(test_labels),
        }
        return model, {**run, "y_pred": pred}

    def run_real(seed):
        paths, labels = _labelled(real.train)
        model, run = fit(paths, labels, seed, f"real, seed {seed}")
        models.append(model)
        return run

    def run_augmented(ck, pick, seed, swap):
        syn_paths, syn_labels = _labelled(ck.images, pick)
        paths, labels = _labelled(real.train)
        desc = f"real+{ck.name}{' swapped' if swap else ''}, seed {seed}"
        return fit(paths + syn_paths, labels + (_swap(syn_labels) if swap else syn_labels), seed, desc)[1]

    table = table1.run_table(
        judged,
        options.classify_seeds,
        options.seed,
        inputs.synthetic_count,
        run_real,
        run_augmented if options.augment else None,
        swap_control=[inputs.checkpoints[-1].name],  # the costliest control: the last checkpoint only
        margin=options.margin,
    )
    return {"classifier": backbone.describe(copts.weights), **table}, models, bank


TEST = "real test split"  # the query set of the test images in the copy search
TRAIN = "real train split"


def _paths(sets: dict[str, list[Path]]) -> list[Path]:
    return [p for c in CLASSES for p in sets[c]]


def _pools(real: RealData, pools: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Every image set the model trained on, by name: the labelled split, the held-out control
    and each pool given (stage 1, unlabelled, replay)."""
    return {
        TRAIN: _paths(real.train),
        CONTROL: _paths(real.control),
        **{n: list(p) for n, p in pools.items() if p},
    }


def _copy_search(real: RealData, pools: dict[str, list[Path]], judged, view, progress: bool) -> dict:
    """The pixel-space search (pixels.py) of the test images and every judged set, each with its
    mirror images, in every training pool and its crops: for leakage and for the copy check."""
    queries = {
        TEST: pixels.query_thumbnails(_paths(real.test), view),
        **{ck.name: pixels.query_thumbnails(_paths(ck.images), view) for ck in judged},
    }
    return pixels.search(queries, _pools(real, pools), view, progress)


def _leakage(
    real: RealData, pools: dict[str, list[Path]], found: dict, options: EvalOptions, progress: bool
) -> Leakage:
    """Test images that are near-duplicates of a training image: within `max_hash_distance` bits
    (perceptual hash, as `data inspect` finds them: re-encoded, resized, mirrored) or within
    `max_pixel_distance` in pixel space (also crops down to 80%). One entry per (test, pool image)."""

    searched = _pools(real, pools)
    test = _paths(real.test)
    pairs = {}
    for pair in leakage(test, searched, options.max_hash_distance, progress, hash_flips(test)):
        pairs[(pair["test"], pair["image"])] = {**pair, "crop": pixels.crop_name(0), "space": "hash bits"}
    for pool, near in found[TEST].items():
        for i in np.flatnonzero(near.distance <= options.max_pixel_distance):
            key = (str(test[i]), str(searched[pool][near.image[i]]))
            pairs.setdefault(
                key,
                {
                    "test": key[0],
                    "pool": pool,
                    "image": key[1],
                    "distance": round(float(near.distance[i]), 4),
                    "flip": FLIPS[near.flip[i]],
                    "crop": pixels.crop_name(int(near.crop[i])),
                    "space": "pixel distance",
                },
            )
    found_pairs = list(pairs.values())
    if found_pairs and not options.allow_leakage:
        first = found_pairs[0]
        raise EvalError(
            f"{len(found_pairs)} near-duplicate pair(s) between the real test split and the training pools "
            f"(leakage), first: {first['test']} ~ {first['image']} ({first['pool']}, {first['flip']}, "
            f"{first['crop']}, {first['space']} {first['distance']}; near-duplicates lie within "
            f"{options.max_hash_distance} hash bits or {options.max_pixel_distance} pixel distance); every "
            "figure would be optimistic. Remove them, or pass --allow-leakage"
        )
    pool_sizes = {name: len(paths) for name, paths in searched.items()}
    return Leakage(found_pairs, options.max_hash_distance, options.max_pixel_distance, pool_sizes)


def _extractors(options: EvalOptions) -> dict[str, Extractor]:
    return {
        name: InceptionExtractor(options.inception_weights, options.device)
        if name == "inception"
        else EfficientNetExtractor(options.classifier.weights, options.device)
        for name in options.features
    }


def _space(inputs: _Inputs, name: str, extractor: Extractor, pools: dict[str, list[Path]]) -> _Space:
    """Every set's features in one space (through the generator's view). A space with no standard
    scale (not Inception) gets one fixed on the real reference (FeatureScale)."""

    def feats(paths, desc):
        return inputs.features(extractor, paths, f"{name} {desc}")

    real, test = inputs.real.train, inputs.real.test
    space = _Space(
        {c: feats(real[c], f"real {c}") for c in CLASSES},
        {c: feats(test[c], f"real test {c}") for c in CLASSES},
        {ck.name: {c: feats(ck.images[c], f"{ck.name} {c}") for c in CLASSES} for ck in inputs.judged},
        [feats(paths, f"pool {pool}") for pool, paths in pools.items()],
    )
    if name == "inception":
        return space
    scale = FeatureScale(np.concatenate(list(space.real.values())))
    return _Space(
        {c: scale(v) for c, v in space.real.items()},
        {c: scale(v) for c, v in space.test.items()},
        {k: {c: scale(v) for c, v in f.items()} for k, f in space.synthetic.items()},
        [scale(v) for v in space.pools],
    )


def _kids(inputs: _Inputs, space: _Space) -> dict[str, KidTable]:
    """KID x4 and the two class margins of every judged set in one space."""
    block, seed = inputs.options.kid_block_size, inputs.options.seed
    return {
        ck.name: kid.kid_table(space.real, space.synthetic[ck.name], block_size=block, seed=seed)
        for ck in inputs.judged
    }


def _memorisation(spaces: dict[str, _Space], found: dict, options: EvalOptions) -> dict[str, dict]:
    """The copy check in every feature space and in pixel space, Holm-corrected over all of them."""
    memo = {
        name: memorisation.check(f.real, f.test, f.synthetic, f.synthetic[CONTROL], CONTROL, pools=f.pools)
        for name, f in spaces.items()
    }
    memo["pixels"] = memorisation.pixel_check(found, TEST, options.max_pixel_distance, CONTROL)
    return memorisation.correct(memo)


def _separations(space: _Space, judged: list[Checkpoint], seed: int) -> dict[str, dict]:
    return {
        ck.name: {
            "classes": separation.class_separation(space.real, space.synthetic[ck.name], seed),
            "real_vs_synthetic": separation.real_vs_synthetic(space.real, space.synthetic[ck.name], seed),
        }
        for ck in judged
    }


def _tsne_maps(space: _Space, checkpoints: list[Checkpoint], seed: int) -> dict[str, tsne.TsneMap]:
    return {
        ck.name: tsne.embed(
            {
                "real AD": space.real["AD"],
                "real NON_AD": space.real["NON_AD"],
                "synthetic AD": space.synthetic[ck.name]["AD"],
                "synthetic NON_AD": space.synthetic[ck.name]["NON_AD"],
            },
            seed=seed,
        )
        for ck in checkpoints
    }


def _probe_fidelity(
    inputs: _Inputs, space: _Space, extractor: Extractor, reconstructions: dict[str, list[Path]] | None
) -> Fidelity:
    """Class fidelity judged by the linear probe on Inception features, with the probe's Table 1."""
    rec_f = None
    if reconstructions:
        rec_f = {
            c: inputs.features(extractor, reconstructions[c], f"inception reconstructed test {c}")
            for c in CLASSES
        }
    probes = _probe_experiments(
        space.real, space.test, space.synthetic, inputs.judged, inputs.options, inputs.synthetic_count, rec_f
    )
    real = probes["real"]
    judge = {"kind": "linear probe on Inception features", "real": real["balanced_accuracy"]}
    return Fidelity(
        probes["fidelity"],
        _with_recall(judge, real),
        probes["reconstructed"],
        counts(reconstructions) if reconstructions else None,
        probes,
    )


def _vote_fidelity(
    inputs: _Inputs, table: dict, models: list, bank: classify.ImageBank, reconstructions
) -> Fidelity:
    """Class fidelity judged by the real-only EfficientNets of Table 1 (no Inception features)."""

    def vote(sets):  # the share of the real-only models' answers that name each class
        votes = [recognised(partial(classify.predict, m, bank=bank), sets) for m in models]
        return {c: float(np.mean([v[c] for v in votes])) for c in CLASSES}

    judge = {
        "kind": f"{table['classifier']} fine-tuned on real images",
        "real": table["real"]["balanced_accuracy"],
    }
    return Fidelity(
        {ck.name: vote(ck.images) for ck in inputs.judged},
        _with_recall(judge, table["real"]),
        vote(reconstructions) if reconstructions else None,
        counts(reconstructions) if reconstructions else None,
    )


def _with_recall(judge: dict, real: dict) -> dict:
    """The judge's recall of each class on the real test images (the fidelity threshold)."""
    return {
        **judge,
        "recall": {c: real[c]["recall"]["mean"] for c in CLASSES},
        "images": {c: int(sum(real["confusion"][i]) // real["seeds"]) for i, c in enumerate(CLASSES)},
    }


def _copies(memo: dict, judged) -> dict:
    return {
        ck.name: {
            "copies": any(m["checkpoints"][ck.name]["copies"] for m in memo.values()),
            "near_copies": max(m["checkpoints"][ck.name]["near_copies"] for m in memo.values()),
        }
        for ck in judged
    }


def _select(
    inputs: _Inputs, kids: dict[str, KidTable], fidelity: Fidelity, table: dict, memo: dict, leaks: Leakage
) -> dict:
    """Both rules' picks and the verdict (selection.select), warned when test images leak."""
    gains_by = f"{table['classifier']}, fine-tuned"
    chosen = selection.select(
        kids,
        fidelity.shares,
        fidelity.judge,
        {ck.name: counts(ck.images) for ck in inputs.judged},
        table["gains"] or None,
        gains_by,
        copies=_copies(memo, inputs.judged),
        control=CONTROL,
        margin=inputs.options.margin,
    )
    chosen["gains_by"] = gains_by
    if leaks.pairs:
        chosen["verdict"] = (
            f"WARNING: {len(leaks.pairs)} near-duplicate pair(s) link test images to training images, so every "
            f"figure below is optimistic. {chosen['verdict']}"
        )
    return chosen


def evaluate(
    real: RealData,
    checkpoints: list[Checkpoint],
    options: EvalOptions,
    progress: bool = True,
    reconstructions: dict[str, list[Path]] | None = None,
    train_pools: dict[str, list[Path]] | None = None,
) -> Evaluation:
    """All the numbers of the report (plots are drawn from them by report.py). `reconstructions`:
    class -> real test images passed through the model's autoencoder (reconstruct.py), whose class
    fidelity is reported beside the checkpoints' (a reference, not a bound). `train_pools`: pool
    name -> the other images the model trained on (stage 1, unlabelled, replay); with the real
    training split they are searched for near-duplicates of the test images first (leakage is an
    error unless `options.allow_leakage`)."""
    options.validate()
    pools = train_pools or {}
    inputs = _inputs(real, checkpoints, options, reconstructions, progress)
    found = _copy_search(inputs.real, pools, inputs.judged, inputs.view, progress)
    leaks = _leakage(inputs.real, pools, found, options, progress)
    extractors = _extractors(options)
    searched = {n: p for n, p in pools.items() if p} if options.pool_features else {}
    spaces = {name: _space(inputs, name, ex, searched) for name, ex in extractors.items()}
    kids = {name: _kids(inputs, space) for name, space in spaces.items()}
    memo = _memorisation(spaces, found, options)
    primary = spaces[options.features[0]]
    table, real_models, bank = _efficientnet_table(inputs)
    if "inception" in spaces:
        fidelity = _probe_fidelity(inputs, spaces["inception"], extractors["inception"], reconstructions)
    else:
        fidelity = _vote_fidelity(inputs, table, real_models, bank, reconstructions)
    return Evaluation(
        options=options,
        resolution=inputs.resolution,
        real=inputs.real,
        checkpoints=checkpoints,
        control=inputs.judged[-1],
        leakage=leaks,
        kid=kids,
        maps=_tsne_maps(primary, checkpoints, options.seed),
        separation=_separations(primary, inputs.judged, options.seed),
        memorisation=memo,
        fidelity=fidelity,
        classification=table,
        selection=_select(inputs, kids[options.features[0]], fidelity, table, memo, leaks),
    )
