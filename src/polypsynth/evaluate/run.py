"""`polypsynth evaluate`: every checkpoint's synthetic images against the real data."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from polypsynth.data.records import CLASSES
from polypsynth.evaluate import classify, kid, selection, tsne
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


def _synthetic_subset(ckpt: Checkpoint, n: int, seed: int) -> dict[str, list[Path]]:
    """n synthetic images split evenly over the classes (drawn without replacement, seeded)."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in CLASSES:
        pool = ckpt.images[c]
        k = min(len(pool), n // len(CLASSES))
        out[c] = [pool[i] for i in sorted(rng.choice(len(pool), k, replace=False))]
    return out


def evaluate(
    real: RealData, checkpoints: list[Checkpoint], options: EvalOptions, progress: bool = True
) -> dict:
    """All the numbers of the report (plots are drawn from them by report.py)."""
    options.validate()
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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the shrink is recorded as subset_size in the results
                result = kid.four_comparisons(
                    real_f,
                    syn_f,
                    subsets=options.kid_subsets,
                    subset_size=options.kid_subset_size,
                    seed=options.seed,
                )
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

    # 4. Class fidelity: do real-data classifiers recognise each synthetic class?
    fidelity = {}
    for ck in checkpoints:
        fidelity[ck.name] = {
            c: float(np.mean([(classify.predict(m, ck.images[c], bank) == i).mean() for m in real_models]))
            for i, c in enumerate(CLASSES)
        }

    # 5. Augmented classification per checkpoint (Table 1, second row), paired with the real-only seeds.
    augmentation, gains = {}, {}
    if options.augment:
        n_syn = round(options.synthetic_share * len(train_paths))
        for ck in checkpoints:
            runs = []
            for s in range(options.classify_seeds):
                syn = _synthetic_subset(ck, n_syn, options.seed + s)
                syn_paths, syn_labels = _labelled(syn)
                model = classify.train_classifier(
                    train_paths + syn_paths,
                    train_labels + syn_labels,
                    copts,
                    options.seed + s,
                    bank,
                    f"real+{ck.name}, seed {s}",
                    progress,
                )
                runs.append(_run(model, test_paths, test_labels, bank))
            augmentation[ck.name] = classify.summarise(runs)
            gains[ck.name] = classify.gain_interval(real_runs, runs)

    chosen = selection.select(kids[primary], fidelity, gains or None)
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
            name: {"knn_accuracy": m.knn_accuracy, "silhouette": m.silhouette} for name, m in maps.items()
        },
        "fidelity": fidelity,
        "classification": {"real": classify.summarise(real_runs), "augmented": augmentation, "gains": gains},
        "selection": chosen,
        "_maps": maps,  # for the plots; not written to results.json
    }
