"""The evaluation's search for copies (run.py's phases): test images near-duplicated in a training
pool (leakage, an error unless allowed) and synthetic images that copy one (memorisation.py).

The real train split is searched fold by fold (each control fold is its own pool), so the positive
control's images, which are training images, are searched in every pool but their own fold's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from polypsynth.data.inspect import FLIPS, hash_flips, leakage
from polypsynth.errors import EvalError
from polypsynth.evaluate import memorisation, pixels
from polypsynth.evaluate.inputs import Inputs, Space, paths_of
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.results import Leakage, LeakPair
from polypsynth.evaluate.sets import CONTROL, RealData

TEST = "real test split"  # the query set of the test images in the copy search
TRAIN = "real train split"


def fold_pool(f: int, folds: int) -> str:
    return f"{TRAIN} (fold {f + 1} of {folds})"


def fold_query(f: int, folds: int) -> str:
    return f"{CONTROL} (fold {f + 1} of {folds})"


def _shown(pool: str) -> str:
    """A pool's name in a report: the train split's folds are one pool there."""
    return TRAIN if pool.startswith(f"{TRAIN} (fold ") else pool


def searched_pools(real: RealData, pools: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Every image set the model trained on, by name: the labelled split (fold by fold) and each
    pool given (stage 1, unlabelled, replay)."""
    k = len(real.folds)
    return {
        **{fold_pool(f, k): paths_of(real.fold(f)) for f in range(k)},
        **{n: list(p) for n, p in pools.items() if p},
    }


def copy_search(inputs: Inputs, pools: dict[str, list[Path]]) -> dict:
    """The pixel-space search (pixels.py) of the test images, every checkpoint's images and each
    control fold's, with their mirror images, in every training pool and its crops."""
    real, view, k = inputs.real, inputs.view, len(inputs.real.folds)
    queries = {
        TEST: pixels.query_thumbnails(paths_of(real.test), view),
        **{ck.name: pixels.query_thumbnails(paths_of(ck.images), view) for ck in inputs.checkpoints},
        **{fold_query(f, k): pixels.query_thumbnails(paths_of(real.fold(f)), view) for f in range(k)},
    }
    return pixels.search(queries, searched_pools(real, pools), view, inputs.progress)


def lesion_pairs(real: RealData, group_of: Callable[[Path], str] | None) -> list[LeakPair]:
    """Test images whose lesion also has images in the train split: one pair per test image."""
    if group_of is None:
        return []
    first: dict[str, Path] = {}
    for p in paths_of(real.train):
        first.setdefault(group_of(p), p)
    pairs = []
    for p in paths_of(real.test):
        lesion = group_of(p)
        if lesion in first:
            pairs.append(
                LeakPair(
                    test=str(p),
                    pool=TRAIN,
                    image=str(first[lesion]),
                    distance=0.0,
                    flip=FLIPS[0],
                    crop=pixels.crop_name(0),
                    space=f"same lesion {lesion}",
                )
            )
    return pairs


def find_leakage(
    real: RealData,
    pools: dict[str, list[Path]],
    found: dict,
    options: EvalOptions,
    progress: bool,
    *,
    lesions: list[LeakPair],
) -> Leakage:
    """Test images that are near-duplicates of a training image: within `max_hash_distance` bits
    (perceptual hash, as `data inspect` finds them: re-encoded, resized, mirrored), within
    `max_pixel_distance` in pixel space (also crops down to 80%), or of a lesion with train images
    (`lesions`). One entry per (test, pool image)."""
    searched = searched_pools(real, pools)
    test = paths_of(real.test)
    pairs: dict[tuple[str, str], LeakPair] = {}
    for pair in lesions:
        pairs[(pair.test, pair.image)] = pair
    for hit in leakage(
        test,
        searched,
        max_distance=options.max_hash_distance,
        progress=progress,
        test_hashes=hash_flips(test),
    ):
        pairs[(hit["test"], hit["image"])] = LeakPair(
            **{**hit, "pool": _shown(hit["pool"])}, crop=pixels.crop_name(0), space="hash bits"
        )
    for pool, near in found[TEST].items():
        for i in np.flatnonzero(near.distance <= options.max_pixel_distance):
            key = (str(test[i]), str(searched[pool][near.image[i]]))
            pairs.setdefault(
                key,
                LeakPair(
                    test=key[0],
                    pool=_shown(pool),
                    image=key[1],
                    distance=round(float(near.distance[i]), 4),
                    flip=FLIPS[near.flip[i]],
                    crop=pixels.crop_name(int(near.crop[i])),
                    space="pixel distance",
                ),
            )
    found_pairs = list(pairs.values())
    if found_pairs and not options.allow_leakage:
        first = found_pairs[0]
        raise EvalError(
            f"{len(found_pairs)} near-duplicate pair(s) between the real test split and the training pools "
            f"(leakage), first: {first.test} ~ {first.image} ({first.pool}, {first.flip}, "
            f"{first.crop}, {first.space} {first.distance}; near-duplicates lie within "
            f"{options.max_hash_distance} hash bits or {options.max_pixel_distance} pixel distance, or show one "
            "lesion); every figure would be optimistic. Remove them, or pass --allow-leakage"
        )
    sizes: dict[str, int] = {}
    for name, paths in searched.items():
        sizes[_shown(name)] = sizes.get(_shown(name), 0) + len(paths)
    return Leakage(found_pairs, options.max_hash_distance, options.max_pixel_distance, sizes)


def memorisation_checks(
    inputs: Inputs, spaces: dict[str, Space], found: dict
) -> dict[str, memorisation.Memorisation]:
    """The copy check in every feature space and in pixel space, Holm-corrected over all of them."""
    options, real = inputs.options, inputs.real
    k = len(real.folds)
    memo = {
        name: memorisation.check(
            f.real,
            f.test,
            f.synthetic,
            control=CONTROL,
            folds=real.folds,
            pools=f.pools,
            tolerance=options.copy_tolerance,
        )
        for name, f in spaces.items()
    }
    memo["pixels"] = memorisation.pixel_check(
        found,
        TEST,
        options.max_pixel_distance,
        tolerance=options.copy_tolerance,
        control=CONTROL,
        folds={fold_query(f, k): fold_pool(f, k) for f in range(k)},
    )
    return memorisation.correct(memo)


def copying(memo: dict[str, memorisation.Memorisation], judged) -> dict[str, bool]:
    """Per judged set: whether any space flags it as copying."""
    return {ck.name: any(m.checkpoints[ck.name].copies for m in memo.values()) for ck in judged}
