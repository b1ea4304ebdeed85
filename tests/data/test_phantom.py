import csv
import hashlib

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from polypsynth.atomic import MARKER
from polypsynth.data import phantom as phantom_mod
from polypsynth.data.phantom import PhantomPlan, generate_phantom
from polypsynth.data.phantom_render import PhantomSpec, render, sharpness
from polypsynth.data.sources import load_phantom
from polypsynth.errors import DataError, PolypsynthError


def _digests(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MARKER  # the marker holds the date it was written
    }


def test_same_seed_gives_identical_files(tmp_path, phantom_small):
    plan = PhantomPlan(size=64, stage1=24, train=18, test=9, unlabelled=6)
    again = tmp_path / "again"
    generate_phantom(again, seed=3, plan=plan, workers=2, progress=False)  # other worker count too
    assert _digests(again) == _digests(phantom_small)


def test_different_seed_gives_different_images(tmp_path):
    plan = PhantomPlan(size=64, stage1=4, train=3, test=0, unlabelled=0)
    a = generate_phantom(tmp_path / "a", seed=1, plan=plan, workers=1, progress=False)
    b = generate_phantom(tmp_path / "b", seed=2, plan=plan, workers=1, progress=False)
    for ra, rb in zip(a, b, strict=True):
        assert ra.path.name == rb.path.name
        assert not np.array_equal(np.asarray(Image.open(ra.path)), np.asarray(Image.open(rb.path)))


def test_manifest_seed_rerenders_the_image(phantom_small):
    records = load_phantom(phantom_small, "classif")
    record = records[0]
    spec = PhantomSpec(size=64, pathology=record.label, close_up=True)
    assert np.array_equal(render(record.seed, spec), np.asarray(Image.open(record.path)))


def test_layout_counts_and_class_ratio(phantom_small):
    with open(phantom_small / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label", "split", "quality", "source", "seed"]
    assert len(rows) == 24 + 18 + 9 + 6
    for row in rows:
        image = Image.open(phantom_small / row["path"])
        assert image.size == (64, 64) and image.mode == "RGB"
    train = [r["label"] for r in rows if r["source"] == "phantom/classif" and r["split"] == "train"]
    assert train.count("AD") == 12 and train.count("NON_AD") == 6  # the study's ~2:1
    stage1 = [r for r in rows if r["source"] == "phantom/stage1"]
    assert {r["label"] for r in stage1} == {"polyp", "non_polyp"}
    assert {r["quality"] for r in stage1} == {"sharp", "blurred", "overexposed"}
    assert all(r["quality"] == "sharp" for r in rows if r["source"] != "phantom/stage1")
    assert len({r["seed"] for r in rows}) == len(rows)


def test_image_content_looks_like_colonoscopy():
    image = render(7, PhantomSpec(size=128, pathology="AD", close_up=True)).astype(float)
    assert image.shape == (128, 128, 3)
    assert image[0, 0].max() == 0 and image[-1, -1].max() == 0  # field stop: black corners
    centre = image[32:96, 32:96]
    r, g, b = (centre[..., c].mean() for c in range(3))
    assert r > g > 0 and r > b  # red-dominant mucosa
    assert image.min() == 0 and centre.std() > 10  # a dark lumen and structure, not a flat colour


def test_quality_variants_measurably_differ():
    seeds = range(12)
    sharp = [render(s, PhantomSpec(size=128, quality="sharp")) for s in seeds]
    blurred = [render(s, PhantomSpec(size=128, quality="blurred")) for s in seeds]
    over = [render(s, PhantomSpec(size=128, quality="overexposed")) for s in seeds]
    for a, b in zip(sharp, blurred, strict=True):
        assert sharpness(b) < 0.7 * sharpness(a)
    assert np.mean([o.mean() for o in over]) > 1.3 * np.mean([s.mean() for s in sharp])
    assert np.mean([(o >= 250).mean() for o in over]) > 5 * np.mean([(s >= 250).mean() for s in sharp]) + 0.01


def _colour_texture_features(path):
    """Simple features on the central crop: joint HSV histogram, Laplacian energy, channel balance."""
    from scipy import ndimage

    image = Image.open(path).convert("RGB")
    w, h = image.size
    crop = image.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    hsv = np.asarray(crop.convert("HSV"), np.float32).reshape(-1, 3) / 255
    hist, _ = np.histogramdd(hsv, bins=(12, 4, 4), range=((0, 1),) * 3)
    rgb = np.asarray(crop, np.float32) / 255
    lap = ndimage.laplace(rgb.mean(-1))
    extra = [
        np.abs(lap).mean(),
        lap.var(),
        (rgb[..., 0] - rgb[..., 1]).mean(),
        (rgb[..., 1] - rgb[..., 2]).mean(),
    ]
    return np.concatenate([hist.ravel() / hist.sum(), extra])


@pytest.mark.slow
def test_classes_overlap_but_are_separable(tmp_path):
    """Logistic regression on simple colour/texture features lands in [0.70, 0.97] balanced accuracy:
    cues are real, yet a share of images is ambiguous, so augmentation effects stay measurable."""
    plan = PhantomPlan(size=96, stage1=0, train=600, test=300, unlabelled=0)
    generate_phantom(tmp_path / "p", seed=11, plan=plan, workers=2, progress=False)
    records = load_phantom(tmp_path / "p", "classif")
    x = {
        s: np.stack([_colour_texture_features(r.path) for r in records if r.split == s])
        for s in ("train", "test")
    }
    y = {s: np.array([r.label == "AD" for r in records if r.split == s]) for s in ("train", "test")}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced"))
    model.fit(x["train"], y["train"])
    score = balanced_accuracy_score(y["test"], model.predict(x["test"]))
    assert 0.70 <= score <= 0.97, score


def test_refuses_non_empty_output_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    plan = PhantomPlan(size=32, stage1=2, train=0, test=0, unlabelled=0)
    with pytest.raises(PolypsynthError, match=r"phantom output folder .*out is not empty; pass --overwrite"):
        generate_phantom(out, plan=plan, workers=1, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(
        PolypsynthError, match=r"out was not written by polypsynth \(it has no .polypsynth marker\)"
    ):
        generate_phantom(out, plan=plan, workers=1, progress=False, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # someone else's folder: never replaced
    (out / "keep.txt").unlink()
    generate_phantom(out, plan=plan, workers=1, progress=False)
    (out / "stale.txt").write_text("left by an earlier run")
    generate_phantom(out, plan=plan, workers=1, progress=False, overwrite=True)  # polypsynth's own
    assert not (out / "stale.txt").exists() and (out / "manifest.csv").is_file()


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = phantom_mod.render

    def failing(seed, spec):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(seed, spec)

    monkeypatch.setattr(phantom_mod, "render", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_phantom(tmp_path / "out", plan=PhantomPlan(size=32, stage1=5), workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 30}, "phantom size must be a multiple of 8 and at least 32, got 30"),
        ({"train": -1}, "phantom train count must be >= 0, got -1"),
        ({"ad_share": 1.5}, r"phantom ad_share must be in \[0, 1\], got 1.5"),
        ({"stage1": 0, "train": 0, "test": 0, "unlabelled": 0}, "phantom plan draws no image"),
    ],
)
def test_bad_plan(kwargs, message, tmp_path):
    with pytest.raises(DataError, match=message):
        generate_phantom(tmp_path / "x", plan=PhantomPlan(**kwargs), progress=False)
