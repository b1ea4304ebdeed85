"""One image path: real frames larger than the generator's images are compared at the generator's
resolution. A perfect generator, a second draw of the real data brought to that resolution
outside polypsynth, must look like the real data in every space; without the view it did not."""

import numpy as np
import pytest
from PIL import Image

from polypsynth.data.phantom import PhantomPlan, generate_phantom
from polypsynth.data.sources import load_any
from polypsynth.evaluate import kid
from polypsynth.evaluate.classify import ClassifierOptions
from polypsynth.evaluate.features import GeneratorView, InceptionExtractor, extract
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.run import evaluate
from polypsynth.evaluate.sets import real_data, synthetic_checkpoints

NATIVE, GENERATOR = 96, 32


@pytest.fixture(scope="module")
def faithful(tmp_path_factory):
    root = tmp_path_factory.mktemp("faithful")
    plan = dict(size=NATIVE, stage1=0, unlabelled=0, ad_share=0.5, ambiguous_share=0.25)
    generate_phantom(
        root / "real", seed=1, plan=PhantomPlan(train=80, test=20, **plan), workers=1, progress=False
    )
    generate_phantom(
        root / "draw", seed=2, plan=PhantomPlan(train=60, test=0, **plan), workers=1, progress=False
    )
    for c in ("AD", "NON_AD"):
        out = root / "samples" / "step-000001" / c
        out.mkdir(parents=True)
        for p in sorted((root / "draw" / "classif" / "train" / c).glob("*.png")):
            Image.open(p).convert("RGB").resize((GENERATOR, GENERATOR), Image.BILINEAR).save(out / p.name)
    return root


@pytest.mark.slow
def test_a_second_draw_at_the_generators_resolution_is_indistinguishable(faithful, tmp_path):
    real = real_data(load_any(faithful / "real"))
    options = EvalOptions(
        classifier=ClassifierOptions(image_size=32, epochs=1),
        classify_seeds=1,
        augment=False,
        cache_dir=str(tmp_path / "cache"),
    )
    results = evaluate(real, synthetic_checkpoints(faithful / "samples"), options, progress=False)
    assert results.resolution == GENERATOR
    for space in ("inception", "efficientnet"):
        k = results.kid[space]["step-000001"]
        for same in ("syn_AD_vs_real_AD", "syn_NON_AD_vs_real_NON_AD"):
            assert abs(k[same].mean) <= 2 * k[same].se, (space, same, k[same])
    gap = results.separation["step-000001"].real_vs_synthetic
    assert gap.ci95[0] <= 0.5 <= gap.ci95[1], gap

    # The same comparison with the real frames at their native size (the path before the view):
    # Inception tells the two draws apart, so the test above can fail.
    ex = InceptionExtractor()
    ck = synthetic_checkpoints(faithful / "samples")[0]
    native = {c: extract(ex, real.train[c], None, progress=False) for c in ("AD", "NON_AD")}
    syn = {c: extract(ex, ck.images[c], None, progress=False) for c in ("AD", "NON_AD")}
    off = kid.kid_table(native, syn, seed=0)["syn_AD_vs_real_AD"]
    assert off.mean > 3 * off.se
    viewed = extract(ex, real.train["AD"][:4], None, progress=False, view=GeneratorView(GENERATOR))
    assert not np.allclose(viewed, native["AD"][:4])
