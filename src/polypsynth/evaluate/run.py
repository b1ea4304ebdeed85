"""`polypsynth evaluate`: every checkpoint's synthetic images against the real data.

Phases: the generator's resolution and view (every image goes through it), the positive control
held out of the real train split, leakage, features and KIDs, memorisation, t-SNE and separation,
Table 1 with its controls, class fidelity, and the selection with its verdict. The control is
judged by the same code as every checkpoint: it is one more `Checkpoint` (sets.control_checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
    FeatureScale,
    GeneratorView,
    InceptionExtractor,
    extract,
)
from polypsynth.evaluate.sets import (
    CONTROL,
    Checkpoint,
    RealData,
    control_checkpoint,
    generator_resolution,
    hold_out_control,
)
from polypsynth.evaluate.uncertainty import MARGIN, check_margin

FEATURES = ("inception", "efficientnet")
ALIASES = {"classifier": "efficientnet"}  # the old name of the EfficientNet space, still accepted


@dataclass
class EvalOptions:
    features: tuple[str, ...] = FEATURES  # the first is the primary space (t-SNE, selection)
    inception_weights: str | None = None
    classifier: classify.ClassifierOptions = field(default_factory=classify.ClassifierOptions)
    classify_seeds: int = 3
    synthetic_share: float = 0.5  # synthetic images added per real training image (augmentation)
    augment: bool = True
    kid_block_size: int = kid.BLOCK_SIZE  # images per set in one KID block (larger sets: disjoint blocks)
    seed: int = 0
    cache_dir: str | None = None
    device: str = "cpu"  # feature extraction (fp32: the standard features); the classifier has its own
    max_hash_distance: int = 4  # perceptual-hash bits within which two images are near-duplicates
    max_pixel_distance: float = pixels.LEAK_DISTANCE  # the same in pixel space (pixels.py), crops too
    pool_features: bool = True  # the feature spaces' copy check also searches the extra training pools
    allow_leakage: bool = False  # go on (with a warning in the verdict) when test images leak
    resolution: int | None = None  # the generator's, when known (checkpoint / bundle); else its images'
    control_share: float = 0.5  # at most this share of each class's real training images held out
    margin: float = MARGIN  # the smallest balanced-accuracy gain worth having

    def validate(self) -> EvalOptions:
        self.features = tuple(ALIASES.get(f, f) for f in self.features)
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown or not self.features:
            raise EvalError(f"unknown feature space {unknown or '(none)'}; valid: {', '.join(FEATURES)}")
        if self.classify_seeds < 1:
            raise EvalError(f"classify seeds must be >= 1, got {self.classify_seeds}")
        classify.check_device(self.device)
        classify.check_device(self.classifier.device)
        if not 0 < self.synthetic_share <= 10:
            raise EvalError(f"synthetic share must be in (0, 10], got {self.synthetic_share}")
        check_margin(self.margin)
        if not 0 < self.control_share < 1:
            raise EvalError(
                f"--control-share must be in (0, 1) (a share of each class's training images), got {self.control_share}"
            )
        if not 0 < self.max_pixel_distance < 2:
            raise EvalError(
                f"--max-pixel-distance must be in (0, 2) (thumbnail distance, pixels.py), got {self.max_pixel_distance}"
            )
        if self.resolution is not None and self.resolution < 8:
            raise EvalError(f"--resolution must be a side in pixels >= 8, got {self.resolution}")
        return self


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


def _efficientnet_table(
    real, judged, options, n_syn, progress, view
) -> tuple[dict, list, classify.ImageBank]:
    """Table 1 with the fine-tuned ImageNet EfficientNet (classify.py) and its controls; also
    returns the real-only models (the fidelity judges when no Inception features are computed) and
    the decoded images they were trained on (reused, not decoded again, by those judges)."""
    copts = options.classifier
    bank = classify.ImageBank(copts.image_size, view)
    test_paths, test_labels = _labelled(real.test)
    models = []
    runs = options.classify_seeds * (1 + (len(judged) + 1 if options.augment else 0))
    counter = iter(range(1, runs + 1))

    def fit(paths, labels, seed, desc):
        desc = f"classifier {next(counter)} of {runs}: {desc}"
        model = classify.train_classifier(paths, labels, copts, seed, bank, desc, progress)
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

    synthetic = [ck for ck in judged if not ck.control]
    table = table1.run_table(
        judged,
        options.classify_seeds,
        options.seed,
        n_syn,
        run_real,
        run_augmented if options.augment else None,
        swap_control=[synthetic[-1].name],  # the costliest control: the last checkpoint only
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
) -> dict:
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
    return {
        "pairs": len(found_pairs),
        "max_distance": options.max_hash_distance,
        "max_pixel_distance": options.max_pixel_distance,
        "pools": {name: len(paths) for name, paths in searched.items()},
        "examples": found_pairs[:20],
    }


def _extractors(options: EvalOptions) -> dict:
    return {
        name: InceptionExtractor(options.inception_weights, options.device)
        if name == "inception"
        else EfficientNetExtractor(options.classifier.weights, options.device)
        for name in options.features
    }


def _features_and_kids(real, judged, extractors, options, view, progress, pools=None) -> tuple[dict, dict]:
    """Features of every set in every space (through the generator's view); KID x4 and the two
    class margins per judged set. `pools` (name -> paths): the other training pools, whose features
    only the copy check uses."""
    cache = Path(options.cache_dir) if options.cache_dir else None
    features: dict[str, dict] = {}
    kids: dict[str, dict] = {}
    for name, ex in extractors.items():

        def feats(paths, desc, ex=ex, name=name):
            return extract(ex, paths, cache, f"{name} {desc}", progress=progress, view=view)

        real_f = {c: feats(real.train[c], f"real {c}") for c in CLASSES}
        test_f = {c: feats(real.test[c], f"real test {c}") for c in CLASSES}
        syn_f = {ck.name: {c: feats(ck.images[c], f"{ck.name} {c}") for c in CLASSES} for ck in judged}
        pool_f = [feats(paths, f"pool {pool}") for pool, paths in (pools or {}).items()]
        if name != "inception":  # no standard scale: fix one on the real reference (FeatureScale)
            scale = FeatureScale(np.concatenate(list(real_f.values())))
            real_f = {c: scale(v) for c, v in real_f.items()}
            test_f = {c: scale(v) for c, v in test_f.items()}
            syn_f = {k: {c: scale(v) for c, v in f.items()} for k, f in syn_f.items()}
            pool_f = [scale(v) for v in pool_f]
        features[name] = {"real": real_f, "test": test_f, "synthetic": syn_f, "pools": pool_f}
        kids[name] = {
            ck.name: {
                k: v.as_dict()
                for k, v in kid.kid_table(
                    real_f, syn_f[ck.name], block_size=options.kid_block_size, seed=options.seed
                ).items()
            }
            for ck in judged
        }
    return features, kids


def _fidelity(
    features, extractors, table, real_models, bank, judged, reconstructions, options, n_syn, view, progress
):
    """Class fidelity of every judged set, the judge that measured it with its recall on the real
    test images, the judge on reconstructions, and the probe's Table 1 (None without Inception)."""
    if "inception" in extractors:
        rec_f = None
        if reconstructions:
            cache = Path(options.cache_dir) if options.cache_dir else None
            rec_f = {
                c: extract(
                    extractors["inception"],
                    reconstructions[c],
                    cache,
                    f"inception reconstructed test {c}",
                    progress=progress,
                    view=view,
                )
                for c in CLASSES
            }
        fi = features["inception"]
        probes = _probe_experiments(fi["real"], fi["test"], fi["synthetic"], judged, options, n_syn, rec_f)
        real = probes["real"]
        judge = {"kind": "linear probe on Inception features", "real": real["balanced_accuracy"]}
        return probes["fidelity"], _with_recall(judge, real), probes["reconstructed"], probes

    def vote(sets):  # the share of the real-only models' answers that name each class
        votes = [recognised(partial(classify.predict, m, bank=bank), sets) for m in real_models]
        return {c: float(np.mean([v[c] for v in votes])) for c in CLASSES}

    fidelity = {ck.name: vote(ck.images) for ck in judged}
    judge = {
        "kind": f"{table['classifier']} fine-tuned on real images",
        "real": table["real"]["balanced_accuracy"],
    }
    return (
        fidelity,
        _with_recall(judge, table["real"]),
        vote(reconstructions) if reconstructions else None,
        None,
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


def _tsne_maps(f: dict, checkpoints, seed: int) -> dict:
    return {
        ck.name: tsne.embed(
            {
                "real AD": f["real"]["AD"],
                "real NON_AD": f["real"]["NON_AD"],
                "synthetic AD": f["synthetic"][ck.name]["AD"],
                "synthetic NON_AD": f["synthetic"][ck.name]["NON_AD"],
            },
            seed=seed,
        )
        for ck in checkpoints
    }


def evaluate(
    real: RealData,
    checkpoints: list[Checkpoint],
    options: EvalOptions,
    progress: bool = True,
    reconstructions: dict[str, list[Path]] | None = None,
    train_pools: dict[str, list[Path]] | None = None,
) -> dict:
    """All the numbers of the report (plots are drawn from them by report.py). `reconstructions`:
    class -> real test images passed through the model's autoencoder (reconstruct.py), whose class
    fidelity is reported beside the checkpoints' (a reference, not a bound). `train_pools`: pool name -> the other images the model trained on (stage 1,
    unlabelled, replay); with the real training split they are searched for near-duplicates of the
    test images first (leakage is an error unless `options.allow_leakage`)."""
    options.validate()
    if reconstructions is not None:
        empty = [c for c in CLASSES if not reconstructions.get(c)]
        if empty:
            raise EvalError(f"reconstructions hold no {', '.join(empty)} images; every class needs some")
    generated = [ck.images for ck in checkpoints] + ([reconstructions] if reconstructions else [])
    resolution = generator_resolution(generated, options.resolution)  # the caller's options stay as given
    view = GeneratorView(resolution)
    real = hold_out_control(real, checkpoints, options.control_share, options.seed)
    judged = [*checkpoints, control_checkpoint(real)]
    found = _copy_search(real, train_pools or {}, judged, view, progress)
    leaks = _leakage(real, train_pools or {}, found, options, progress)
    n_syn = round(options.synthetic_share * sum(len(v) for v in real.train.values()))
    extractors = _extractors(options)
    searched = {n: p for n, p in (train_pools or {}).items() if p} if options.pool_features else {}
    features, kids = _features_and_kids(real, judged, extractors, options, view, progress, searched)
    memo = {
        name: memorisation.check(
            f["real"], f["test"], f["synthetic"], f["synthetic"][CONTROL], CONTROL, pools=f["pools"]
        )
        for name, f in features.items()
    }
    memo = memorisation.correct(
        {**memo, "pixels": memorisation.pixel_check(found, TEST, options.max_pixel_distance, CONTROL)}
    )
    primary = options.features[0]
    f = features[primary]
    separations = {
        ck.name: {
            "classes": separation.class_separation(f["real"], f["synthetic"][ck.name], options.seed),
            "real_vs_synthetic": separation.real_vs_synthetic(
                f["real"], f["synthetic"][ck.name], options.seed
            ),
        }
        for ck in judged
    }
    maps = _tsne_maps(f, checkpoints, options.seed)
    table, real_models, bank = _efficientnet_table(real, judged, options, n_syn, progress, view)
    fidelity, judge, reconstructed, probes = _fidelity(
        features,
        extractors,
        table,
        real_models,
        bank,
        judged,
        reconstructions,
        options,
        n_syn,
        view,
        progress,
    )
    gains_by = f"{table['classifier']}, fine-tuned"
    counts = {ck.name: {c: len(ck.images[c]) for c in CLASSES} for ck in judged}
    chosen = selection.select(
        kids[primary],
        fidelity,
        judge,
        counts,
        table["gains"] or None,
        gains_by,
        copies=_copies(memo, judged),
        control=CONTROL,
        margin=options.margin,
    )
    chosen["gains_by"] = gains_by
    if leaks["pairs"]:
        chosen["verdict"] = (
            f"WARNING: {leaks['pairs']} near-duplicate pair(s) link test images to training images, so every "
            f"figure below is optimistic. {chosen['verdict']}"
        )
    return {
        "options": {**asdict(options), "classifier": asdict(options.classifier)},
        "resolution": resolution,
        "checkpoints": [{"name": c.name, "step": c.step, "images": counts[c.name]} for c in checkpoints],
        "control": {"name": CONTROL, "images": counts[CONTROL]},
        "real": {split: {c: len(getattr(real, split)[c]) for c in CLASSES} for split in ("train", "test")},
        "primary_features": primary,
        "leakage": leaks,
        "kid": kids,
        "tsne": {
            name: {"knn_accuracy": m.knn_accuracy, "knn_chance": m.knn_chance, "silhouette": m.silhouette}
            for name, m in maps.items()
        },
        "separation": separations,
        "memorisation": memo,
        "fidelity": fidelity,
        "fidelity_judge": judge,
        "fidelity_reconstructed": (
            {**reconstructed, "images": {c: len(reconstructions[c]) for c in CLASSES}}
            if reconstructed and reconstructions
            else None
        ),
        "classification": table,
        "probe": probes,
        "selection": chosen,
        "_maps": maps,  # for the plots; not written to results.json
    }
