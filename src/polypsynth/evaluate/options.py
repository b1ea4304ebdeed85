"""The options of one evaluation, checked before any image is read."""

from __future__ import annotations

from dataclasses import dataclass, field

from polypsynth.errors import EvalError
from polypsynth.evaluate import classify, kid, memorisation, pixels
from polypsynth.evaluate.sets import FOLDS, check_group_by
from polypsynth.evaluate.uncertainty import MIN_GAIN, check_min_gain, check_seed_sd

MAX_FOLDS = 10

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
    control_folds: int = FOLDS  # the positive control's folds of the real train split (sets.py)
    group_by: str | None = (
        None  # which lesion an image shows: 'column:NAME' or 'pattern:REGEX' (sets.lesion_groups)
    )
    min_gain: float = MIN_GAIN  # the smallest balanced-accuracy gain worth having
    seed_sd: float | None = None  # declared seed-to-seed SD of one classifier's balanced accuracy (one seed)
    copy_tolerance: float = memorisation.TOLERANCE  # copy rate accepted where test images show none

    def validate(self) -> EvalOptions:
        self.features = tuple(ALIASES.get(f, f) for f in self.features)
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown or not self.features:
            raise EvalError(f"unknown feature space {unknown or '(none)'}; valid: {', '.join(FEATURES)}")
        if self.classify_seeds < 1:
            raise EvalError(f"classify seeds must be >= 1, got {self.classify_seeds}")
        classify.check_device(self.device)
        classify.check_options(self.classifier)
        if not 0 < self.synthetic_share <= 10:
            raise EvalError(f"synthetic share must be in (0, 10], got {self.synthetic_share}")
        check_min_gain(self.min_gain)
        if self.seed_sd is not None:
            check_seed_sd(self.seed_sd)
        memorisation.check_tolerance(self.copy_tolerance)
        if self.group_by is not None:
            check_group_by(self.group_by)
        if not 2 <= self.control_folds <= MAX_FOLDS:
            raise EvalError(
                f"--control-folds must be in [2, {MAX_FOLDS}] (folds of the real train split), got {self.control_folds}"
            )
        if not 0 < self.max_pixel_distance < 2:
            raise EvalError(
                f"--max-pixel-distance must be in (0, 2) (thumbnail distance, pixels.py), got {self.max_pixel_distance}"
            )
        if self.resolution is not None and self.resolution < 8:
            raise EvalError(f"--resolution must be a side in pixels >= 8, got {self.resolution}")
        return self
