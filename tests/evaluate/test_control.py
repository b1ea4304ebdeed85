"""The cross-fitted positive control: folds that keep the whole real train split in use, keep a
lesion's frames together, and name their inputs when they cannot be made."""

import re
from pathlib import Path

import numpy as np
import pytest

from polypsynth.errors import EvalError
from polypsynth.evaluate import copies, memorisation
from polypsynth.evaluate.sets import RealData, control_folds, lesion_groups


def _real(lesions=(40, 20), frames=4, test=()):
    """Paths named by lesion and frame: L<A or N><lesion>-<frame>.png (nothing is opened)."""
    train = {
        c: [Path(f"/d/L{c[0]}{i:03d}-{f}.png") for i in range(n) for f in range(frames)]
        for c, n in zip(("AD", "NON_AD"), lesions, strict=True)
    }
    return RealData(train, {"AD": [Path(p) for p in test], "NON_AD": []})


def test_folds_cover_the_train_split_once_stratified_by_class():
    real = control_folds(_real(frames=1), folds=2, seed=3)
    assert len(real.folds) == 2
    for c, n in (("AD", 40), ("NON_AD", 20)):
        held = np.concatenate([f[c] for f in real.folds])
        assert sorted(held.tolist()) == list(range(n))  # every image held out exactly once
        assert [len(f[c]) for f in real.folds] == [n // 2, n // 2]
    assert real.fold(0)["AD"] == [real.train["AD"][i] for i in real.folds[0]["AD"]]
    assert sorted(real.rest(0)["AD"] + real.fold(0)["AD"]) == sorted(real.train["AD"])
    assert (
        control_folds(_real(frames=1), 2, 3).folds[0]["AD"].tolist() == real.folds[0]["AD"].tolist()
    )  # seeded


def test_a_lesions_frames_stay_in_one_fold():
    real = _real(frames=4)
    lesion = lesion_groups(r"pattern:^(L[AN]\d+)-\d+\.png$")
    grouped = control_folds(real, 2, 0, lesion)
    for fold in grouped.folds:
        held = {lesion(p) for c in fold for p in (real.train[c][i] for i in fold[c])}
        rest = {
            lesion(p)
            for f in grouped.folds
            if f is not fold
            for c in f
            for p in (real.train[c][i] for i in f[c])
        }
        assert not held & rest
    by_frame = control_folds(real, 2, 0)  # frames drawn one by one: lesions split across folds
    split = {lesion(real.train["AD"][i]) for i in by_frame.folds[0]["AD"]} & {
        lesion(real.train["AD"][i]) for i in by_frame.folds[1]["AD"]
    }
    assert len(split) > 10


def test_frame_level_folds_make_the_control_optimistic_and_lesion_folds_do_not():
    """Four frames per polyp, nearly alike: a fold drawn by frame has each of its frames' siblings
    in the rest, so its images lie as close to the training images as copies do (and a k-NN names
    their class from their siblings); drawn by lesion they lie as far as new polyps do."""
    rng = np.random.default_rng(0)
    real = _real(lesions=(60, 40), frames=4)

    def frames(n_lesions, centre):
        return np.repeat(rng.normal(centre, 1, (n_lesions, 8)), 4, axis=0) + rng.normal(
            0, 0.05, (4 * n_lesions, 8)
        )

    feats = {"AD": frames(60, 0.3), "NON_AD": frames(40, -0.3)}
    test = {"AD": frames(20, 0.3), "NON_AD": frames(10, -0.3)}  # new polyps
    lesion = lesion_groups(r"pattern:^(L[AN]\d+)-")

    def control(folds):
        check = memorisation.check(feats, test, {"ctl": feats}, control="ctl", folds=folds.folds)
        return memorisation.correct({"s": check})["s"].checkpoints["ctl"]

    by_frame, by_lesion = control(control_folds(real, 2, 0)), control(control_folds(real, 2, 0, lesion))
    assert by_frame.near_copies > 0.8 and by_frame.copies  # its siblings: it looks like a copier
    assert by_lesion.near_copies < 0.15 and not by_lesion.copies
    assert by_lesion.chance == by_frame.chance


def test_a_lesion_in_both_splits_is_leakage():
    real = _real(frames=2, test=["/d/LA007-9.png", "/d/LA999-0.png"])
    pairs = copies.lesion_pairs(real, lesion_groups(r"pattern:^(L[AN]\d+)-"))
    assert [(p.test, p.image, p.space) for p in pairs] == [
        ("/d/LA007-9.png", "/d/LA007-0.png", "same lesion LA007")
    ]
    assert copies.lesion_pairs(real, None) == []


def test_lesions_from_a_csv_column(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,split,lesion\na.png,AD,train,P1\nb.png,AD,train,P1\nc.png,NON_AD,train,\n")
    lesion = lesion_groups("column:lesion", csv)
    assert lesion(tmp_path / "a.png") == lesion(tmp_path / "b.png") == "P1"
    with pytest.raises(EvalError, match=r"--group-by column:lesion: no lesion for .*c.png in .*m.csv"):
        lesion(tmp_path / "c.png")
    with pytest.raises(
        EvalError,
        match=r"--group-by column:polyp: .*m.csv has no column 'polyp' \(columns: path, label, split, lesion\)",
    ):
        lesion_groups("column:polyp", csv)
    with pytest.raises(
        EvalError, match=r"--group-by column:lesion needs --real to be a CSV manifest, got .*"
    ):
        lesion_groups("column:lesion", tmp_path)


def test_bad_group_options_and_too_few_lesions_are_named():
    with pytest.raises(EvalError, match=r"--group-by pattern '\(' is not a regular expression"):
        lesion_groups("pattern:(")
    with pytest.raises(
        EvalError, match=re.escape("--group-by pattern 'x\\\\d' finds no lesion in the file name LA000-0.png")
    ):
        control_folds(_real(), 2, 0, lesion_groups(r"pattern:x\d"))
    with pytest.raises(
        EvalError,
        match=r"--group-by must be 'column:NAME' \(a column of the CSV manifest\) or 'pattern:REGEX', got 'name'",
    ):
        lesion_groups("name")
    with pytest.raises(
        EvalError,
        match=r"the real train split has 20 NON_AD images: control fold 1 of 3 holds out \d+ and leaves \d+; the "
        r"positive control needs at least 10 in each \(fewer --control-folds, or more images\)",
    ):
        control_folds(_real(lesions=(40, 20), frames=1), folds=3)
    with pytest.raises(
        EvalError, match=r"the real train split has 1 lesion group\(s\); 2 control folds need as many"
    ):
        control_folds(_real(lesions=(4, 4), frames=4), 2, 0, lambda p: "one")
