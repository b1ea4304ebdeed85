"""`polypsynth evaluate`: every checkpoint's synthetic images against the real data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate import classify, kid, probe, selection, tsne
from polypsynth.evaluate.errors import EvalError
from polypsynth.evaluate.features import ClassifierExtractor, InceptionExtractor, extract
from polypsynth.evaluate.sets import Checkpoint, RealData

FEATURES = ("inception", "classifier")


@dataclass
class EvalOptions:
    features: tuple[str, ...] = FEATURES  # the first is the primary space (t-SNE, selection)
    inception_weights: str | None = None
    classifier: classify.ClassifierOptions = field(default_factory=classify.ClassifierOptions)
    classify_seeds: int = 3
    synthetic_share: float = 0.5  # synthetic images added per real training image (augmentation)
    augment: bool = True
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0
    cache_dir: str | None = None

    def validate(self) -> EvalOptions:
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown or not self.features:
            raise EvalError(f"unknown feature space {unknown or '(none)'}; valid: {', '.join(FEATURES)}")
        if self.classify_seeds < 1:
            raise EvalError(f"classify seeds must be >= 1, got {self.classify_seeds}")
        if not 0 < self.synthetic_share <= 10:
            raise EvalError(f"synthetic share must be in (0, 10], got {self.synthetic_share}")
        return self


def weights_hash(model) -> str:
    """Identity of trained weights (the feature cache key of the classifier space)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _labelled(sets: dict[str, list[Path]]) -> tuple[list[Path], list[int]]:
    paths = [p for c in CLASSES for p in sets[c]]
    labels = [i for i, c in enumerate(CLASSES) for _ in sets[c]]
    return paths, labels


def _run(model, test_paths, test_labels, bank) -> dict:
    pred = classify.predict(model, test_paths, bank)
    return {
        "metrics": classify.classification_metrics(test_labels, pred),
        "y_true": np.asarray(test_labels),
        "y_pred": pred,
    }


def _synthetic_subset(ckpt: Checkpoint, n: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of n synthetic images split evenly over the classes (without replacement, seeded)."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in CLASSES:
        k = min(len(ckpt.images[c]), n // len(CLASSES))
        out[c] = np.sort(rng.choice(len(ckpt.images[c]), k, replace=False))
    return out


def _augmentation(checkpoints, options, n_syn, real_runs, run_one) -> tuple[dict, dict]:
    """Table 1's second row for one classifier: per checkpoint and seed, `run_one(ckpt, picks,
    seed)` trains on real + the picked synthetic images; returns the summaries over seeds and the
    gains over `real_runs` (paired by seed)."""
    augmented, gains = {}, {}
    if options.augment:
        for ck in checkpoints:
            runs = [
                run_one(ck, _synthetic_subset(ck, n_syn, options.seed + s), s)
                for s in range(options.classify_seeds)
            ]
            augmented[ck.name] = classify.summarise(runs)
            gains[ck.name] = classify.gain_interval(real_runs, runs)
    return augmented, gains


def recognised(predict, sets: dict) -> dict[str, float]:
    """Per class, the share of a set that `predict` assigns to that class (class fidelity)."""
    return {c: float((np.asarray(predict(sets[c])) == i).mean()) for i, c in enumerate(CLASSES)}


def _probe_experiments(real_f, test_f, synthetic_f, checkpoints, options, n_syn, ceiling_f=None) -> dict:
    """The linear probe on Inception features: real only, real + synthetic per checkpoint, the
    fidelity of each synthetic class (see probe.py) and, given reconstruction features, the
    autoencoder's ceiling on it (see reconstruct.py)."""
    train_x = np.concatenate([real_f[c] for c in CLASSES])
    train_y = np.concatenate([np.full(len(real_f[c]), i) for i, c in enumerate(CLASSES)])
    test_x = np.concatenate([test_f[c] for c in CLASSES])
    test_y = np.concatenate([np.full(len(test_f[c]), i) for i, c in enumerate(CLASSES)])
    judge, real_run = probe.run(train_x, train_y, test_x, test_y)
    real_runs = [real_run] * options.classify_seeds  # deterministic fit: one run stands for every seed
    fidelity = {
        ck.name: recognised(lambda x: probe.predict(judge, x), synthetic_f[ck.name]) for ck in checkpoints
    }
    ceiling = recognised(lambda x: probe.predict(judge, x), ceiling_f) if ceiling_f else None

    def run_one(ck, pick, _seed):
        syn_x = np.concatenate([synthetic_f[ck.name][c][pick[c]] for c in CLASSES])
        syn_y = np.concatenate([np.full(len(pick[c]), i) for i, c in enumerate(CLASSES)])
        x, y = np.concatenate([train_x, syn_x]), np.concatenate([train_y, syn_y])
        return probe.run(x, y, test_x, test_y)[1]

    augmented, gains = _augmentation(checkpoints, options, n_syn, real_runs, run_one)
    return {
        "features": "inception",
        "fidelity": fidelity,
        "ceiling": ceiling,
        "real": classify.summarise([real_run]),
        "augmented": augmented,
        "gains": gains,
    }


def evaluate(
    real: RealData,
    checkpoints: list[Checkpoint],
    options: EvalOptions,
    progress: bool = True,
    reconstructions: dict[str, list[Path]] | None = None,
) -> dict:
    """All the numbers of the report (plots are drawn from them by report.py). `reconstructions`:
    class -> real test images passed through the model's autoencoder (reconstruct.py); the judge's
    answer on them is reported as the ceiling of class fidelity."""
    options.validate()
    if reconstructions is not None:
        empty = [c for c in CLASSES if not reconstructions.get(c)]
        if empty:
            raise EvalError(f"reconstructions hold no {', '.join(empty)} images; every class needs some")
    cache = Path(options.cache_dir) if options.cache_dir else None
    copts = options.classifier
    bank = classify.ImageBank(copts.image_size)
    train_paths, train_labels = _labelled(real.train)
    test_paths, test_labels = _labelled(real.test)

    # 1. Real-only classifiers (Table 1, first row); the first also defines the domain features.
    real_models, real_runs = [], []
    for s in range(options.classify_seeds):
        model = classify.train_classifier(
            train_paths, train_labels, copts, options.seed + s, bank, f"real only, seed {s}", progress
        )
        real_models.append(model)
        real_runs.append(_run(model, test_paths, test_labels, bank))

    # 2. Features, KID x4 per checkpoint and feature space.
    extractors = {}
    for name in options.features:
        if name == "inception":
            extractors[name] = InceptionExtractor(options.inception_weights)
        else:
            extractors[name] = ClassifierExtractor(
                real_models[0], copts.image_size, weights_hash(real_models[0])
            )
    features: dict[str, dict] = {}
    kids: dict[str, dict] = {}
    for name, ex in extractors.items():
        real_f = {
            c: extract(ex, real.train[c], cache, f"{name} real {c}", progress=progress) for c in CLASSES
        }
        features[name] = {"real": real_f, "synthetic": {}}
        kids[name] = {}
        for ck in checkpoints:
            syn_f = {
                c: extract(ex, ck.images[c], cache, f"{name} {ck.name} {c}", progress=progress)
                for c in CLASSES
            }
            features[name]["synthetic"][ck.name] = syn_f
            sizes = {
                "subsets": options.kid_subsets,
                "subset_size": options.kid_subset_size,
                "seed": options.seed,
            }
            # Table 2's four KIDs, and the two margins of the clinical rule with their joint errors
            result = {
                **kid.four_comparisons(real_f, syn_f, **sizes),
                **kid.class_margins(real_f, syn_f, **sizes),
            }
            kids[name][ck.name] = {k: v.as_dict() for k, v in result.items()}

    # 3. t-SNE in the primary feature space.
    primary = options.features[0]
    maps = {}
    for ck in checkpoints:
        f = features[primary]
        groups = {
            "real AD": f["real"]["AD"],
            "real NON_AD": f["real"]["NON_AD"],
            "synthetic AD": f["synthetic"][ck.name]["AD"],
            "synthetic NON_AD": f["synthetic"][ck.name]["NON_AD"],
        }
        maps[ck.name] = tsne.embed(groups, seed=options.seed)

    # 4. Class fidelity: does a classifier trained on real data recognise each synthetic class? The
    # judge is the Inception linear probe when Inception features are computed, else the real-only
    # EfficientNet-B0 models; the judge's own real-test balanced accuracy is reported with it.
    n_syn = round(options.synthetic_share * len(train_paths))
    probes = None
    if "inception" in extractors:
        test_f = {
            c: extract(
                extractors["inception"], real.test[c], cache, f"inception real test {c}", progress=progress
            )
            for c in CLASSES
        }
        ceiling_f = None
        if reconstructions:
            ceiling_f = {
                c: extract(
                    extractors["inception"],
                    reconstructions[c],
                    cache,
                    f"inception reconstructed test {c}",
                    progress=progress,
                )
                for c in CLASSES
            }
        f = features["inception"]
        probes = _probe_experiments(f["real"], test_f, f["synthetic"], checkpoints, options, n_syn, ceiling_f)
        fidelity, ceiling = probes["fidelity"], probes["ceiling"]
        judge = {"kind": "linear probe on Inception features", "real": probes["real"]["balanced_accuracy"]}
    else:

        def vote(sets):  # the share of the real-only models' answers that name each class
            votes = [recognised(partial(classify.predict, m, bank=bank), sets) for m in real_models]
            return {c: float(np.mean([v[c] for v in votes])) for c in CLASSES}

        fidelity = {ck.name: vote(ck.images) for ck in checkpoints}
        ceiling = vote(reconstructions) if reconstructions else None
        judge = {"kind": "EfficientNet-B0 trained on real images", "real": None}

    # 5. Augmented classification per checkpoint (Table 1, second row), paired with the real-only seeds.
    def run_one(ck, pick, seed):
        syn_paths, syn_labels = _labelled({c: [ck.images[c][i] for i in pick[c]] for c in CLASSES})
        model = classify.train_classifier(
            train_paths + syn_paths,
            train_labels + syn_labels,
            copts,
            options.seed + seed,
            bank,
            f"real+{ck.name}, seed {seed}",
            progress,
        )
        return _run(model, test_paths, test_labels, bank)

    augmentation, gains = _augmentation(checkpoints, options, n_syn, real_runs, run_one)

    real_summary = classify.summarise(real_runs)
    if judge["real"] is None:
        judge["real"] = real_summary["balanced_accuracy"]
    # The verdict weighs the gains of the classifier that also judges fidelity.
    if probes is not None:
        verdict_gains, gains_by = probes["gains"], "linear probe on Inception features"
    else:
        verdict_gains, gains_by = gains, "EfficientNet-B0"
    chosen = selection.select(kids[primary], fidelity, verdict_gains or None, gains_by)
    chosen["gains_by"] = gains_by
    return {
        "options": {**asdict(options), "classifier": asdict(copts)},
        "checkpoints": [
            {"name": c.name, "step": c.step, "images": {k: len(v) for k, v in c.images.items()}}
            for c in checkpoints
        ],
        "real": {split: {c: len(getattr(real, split)[c]) for c in CLASSES} for split in ("train", "test")},
        "primary_features": primary,
        "kid": kids,
        "tsne": {
            name: {"knn_accuracy": m.knn_accuracy, "knn_chance": m.knn_chance, "silhouette": m.silhouette}
            for name, m in maps.items()
        },
        "fidelity": fidelity,
        "fidelity_judge": judge,
        "fidelity_ceiling": (
            {**ceiling, "images": {c: len(reconstructions[c]) for c in CLASSES}} if ceiling else None
        ),
        "classification": {"real": real_summary, "augmented": augmentation, "gains": gains},
        "probe": probes,
        "selection": chosen,
        "_maps": maps,  # for the plots; not written to results.json
    }
