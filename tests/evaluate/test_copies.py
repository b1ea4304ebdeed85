"""Copies found however they are copied: the pixel-space search (pixels.py) against an independent
brute force, and a checkpoint with 10% mirrored or 10% cropped copies of a training pool flagged."""

import random

import numpy as np
import pytest
from PIL import Image, ImageOps
from quiet_memo import quiet_memo

from polypsynth.evaluate import memorisation, pixels
from polypsynth.evaluate.features import GeneratorView


def _thumb_reference(image: Image.Image) -> np.ndarray:
    """An independent 16-px thumbnail: PIL's antialiased bilinear resize, standardised with NumPy."""
    a = np.asarray(image.resize((16, 16), Image.BILINEAR), np.float64).transpose(2, 0, 1).ravel()
    a = a - a.mean()
    return a / np.linalg.norm(a)


def _crop(image: Image.Image, scale: float, fx: float, fy: float) -> Image.Image:
    side = round(image.width * scale)
    left, top = round((image.width - side) * fx), round((image.height - side) * fy)
    return image.crop((left, top, left + side, top + side))


def _pil_flips(image: Image.Image) -> list[Image.Image]:
    return [
        image,
        *(
            image.transpose(t)
            for t in (
                Image.Transpose.FLIP_LEFT_RIGHT,
                Image.Transpose.FLIP_TOP_BOTTOM,
                Image.Transpose.ROTATE_180,
            )
        ),
    ]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from polypsynth.data.phantom import PhantomPlan, generate_phantom

    root = tmp_path_factory.mktemp("copies")
    generate_phantom(
        root / "p",
        seed=3,
        plan=PhantomPlan(size=32, stage1=120, train=400, test=100, unlabelled=0),
        workers=1,
        progress=False,
    )
    return root


def test_the_search_finds_the_nearest_flip_and_crop_like_a_brute_force(phantom, tmp_path):
    stage1 = sorted((phantom / "p" / "stage1").rglob("*.png"))[:40]
    view = GeneratorView(32)
    # Queries: a left-right mirror of image 7, a crop of image 21 at a grid point, and a real image.
    img7, img21 = (Image.open(stage1[k]).convert("RGB") for k in (7, 21))
    ImageOps.mirror(img7).save(tmp_path / "m.png")
    _crop(img21, 0.87, 2 / 3, 0.0).resize((32, 32), Image.BICUBIC).save(tmp_path / "c.png")
    queries = [tmp_path / "m.png", tmp_path / "c.png", stage1[30]]
    found = pixels.search({"q": pixels.query_thumbnails(queries, view)}, {"pool": stage1}, view)
    near = found["q"]["pool"]
    assert list(near.image) == [7, 21, 30]
    assert pixels.FLIPS[near.flip[0]] == "mirrored left-right" and near.distance[0] < 1e-3
    assert pixels.crop_name(int(near.crop[1])) == "87% crop at 67% across, 0% down the margin"
    assert near.distance[2] < 1e-3 and pixels.crop_name(int(near.crop[2])) == "whole image"
    # Against a brute force over PIL-made flips and crops of every pool image: the same distances.
    brute = []
    for q in queries:
        qs = [_thumb_reference(v) for v in _pil_flips(Image.open(q).convert("RGB"))]
        best = 2.0
        for p in stage1:
            im = Image.open(p).convert("RGB")
            for scale, fx, fy in pixels.CROPS:
                r = _thumb_reference(_crop(im, scale, fx, fy))
                best = min(best, min(np.sqrt(max(0.0, 2 - 2 * float(v @ r))) for v in qs))
        brute.append(best)
    assert near.distance == pytest.approx(brute, abs=0.03)  # two resize implementations


def test_ten_percent_mirrored_or_cropped_copies_of_any_pool_are_flagged(phantom, tmp_path, monkeypatch):
    """Of 200 images, 20 copies of stage-1 images (mirrored one way or another; or cropped to a
    random 80-100% of the side at a random place and blown up): flagged after Holm's correction with
    two quiet spaces; 200 fresh images and the control are not."""
    rng = random.Random(0)
    stage1 = sorted((phantom / "p" / "stage1").rglob("*.png"))
    train = sorted((phantom / "p" / "classif" / "train").rglob("*.png"))
    test = sorted((phantom / "p" / "classif" / "test").rglob("*.png"))
    fresh, held, reference = train[:200], train[200:260], train[260:]
    flips = (ImageOps.mirror, ImageOps.flip, lambda im: im.rotate(180))
    mirrored, cropped = [], []
    for k, p in enumerate(stage1[:20]):
        im = Image.open(p).convert("RGB")
        flips[k % 3](im).save(tmp_path / f"m{k}.png")
        mirrored.append(tmp_path / f"m{k}.png")
        c = _crop(im, rng.uniform(0.8, 1.0), rng.random(), rng.random()).resize(im.size, Image.BICUBIC)
        c.save(tmp_path / f"c{k}.png")
        cropped.append(tmp_path / f"c{k}.png")
    view = GeneratorView(32)
    sets = {"fresh": fresh, "mirrors": fresh[:180] + mirrored, "crops": fresh[:180] + cropped, "ctl": held}
    queries = {name: pixels.query_thumbnails(paths, view) for name, paths in sets.items()}
    queries["test"] = pixels.query_thumbnails(test, view)
    found = pixels.search(queries, {"train": reference, "ctl": held, "stage1": stage1}, view)
    out = memorisation.pixel_check(found, "test", pixels.LEAK_DISTANCE, control="ctl", folds={"ctl": "ctl"})
    ck = out.checkpoints
    assert ck["mirrors"].near_copies == pytest.approx(0.10)
    assert ck["crops"].near_copies == pytest.approx(0.10)
    assert ck["fresh"].near_copies == 0 and ck["ctl"].near_copies == 0 and ck["fresh"].chance == 0
    assert ck["mirrors"].count == 20 and ck["mirrors"].reference == "tolerance 1%"
    quiet = dict.fromkeys(sets, 1.0)
    corrected = memorisation.correct({"a": quiet_memo(quiet), "b": quiet_memo(quiet), "pixels": out})
    assert {n for n, c in corrected["pixels"].checkpoints.items() if c.copies} == {"mirrors", "crops"}
    # Without the crops in the pool's search, the cropped copies go unseen: the grid is what finds them.
    monkeypatch.setattr(pixels, "CROPS", pixels.CROPS[:1])
    plain = pixels.search({"crops": queries["crops"], "test": queries["test"]}, {"stage1": stage1}, view)
    assert (
        memorisation.pixel_check(plain, "test", pixels.LEAK_DISTANCE).checkpoints["crops"].near_copies < 0.06
    )
