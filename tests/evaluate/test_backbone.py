"""The ImageNet EfficientNet the evaluation fine-tunes and reads features from, and the fixed
scale of its feature space."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polypsynth.errors import EvalError
from polypsynth.evaluate import kid
from polypsynth.evaluate.backbone import build_backbone, lite0_state_dict, normalise
from polypsynth.evaluate.features import FeatureScale

DAISY, PALACE, BELL_COTE, BOATHOUSE, CHURCH = 985, 698, 442, 449, 497


def test_lite0_from_the_package_recognises_imagenet_photos():
    """The package's weights, mapped in order onto timm's Lite0, classify scikit-learn's two
    sample photos as ImageNet would: a daisy, and a Chinese temple (palace / bell cote / ...)."""
    from sklearn.datasets import load_sample_images

    model = build_backbone(1000).eval()
    x = torch.stack(
        [torch.from_numpy(i.copy()).permute(2, 0, 1).float() / 255 for i in load_sample_images().images]
    )
    x = F.interpolate(x, size=(224, 336), mode="bilinear", antialias=True)[..., 56:280]  # centre square
    with torch.no_grad():
        top = model(normalise(model, x)).topk(3).indices.tolist()
    assert top[1][0] == DAISY, top  # flower.jpg
    assert top[0][0] in {PALACE, BELL_COTE, BOATHOUSE, CHURCH}, top  # china.jpg
    # A fresh two-class head keeps the backbone: the same pooled features.
    two = build_backbone(2).eval()
    with torch.no_grad():
        a = model.forward_head(model.forward_features(normalise(model, x)), pre_logits=True)
        b = two.forward_head(two.forward_features(normalise(two, x)), pre_logits=True)
    assert two.num_classes == 2 and torch.equal(a, b)


def test_lite0_file_that_does_not_fit_is_refused_by_name(tmp_path):
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = {f"_t{i}": v for i, (_, v) in enumerate(model.state_dict().items())}
    short = tmp_path / "short.pth"
    torch.save(dict(list(state.items())[:-2]), short)
    with pytest.raises(EvalError, match=r"short.pth: 294 tensors, but timm's efficientnet_lite0 has 296"):
        lite0_state_dict(model, short)
    wrong = tmp_path / "wrong.pth"
    state["_t0"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, wrong)
    with pytest.raises(
        EvalError, match=r"tensor _t0 has shape \(8, 3, 3, 3\), but conv_stem.weight .* needs \(32, 3, 3, 3\)"
    ):
        lite0_state_dict(model, wrong)
    # A correct file (written here from a model built in code) loads exactly.
    good = tmp_path / "good.pth"
    torch.save({f"_t{i}": v for i, (_, v) in enumerate(model.state_dict().items())}, good)
    loaded = build_backbone(1000, lite0_path=good)
    assert torch.equal(loaded.state_dict()["conv_stem.weight"], model.state_dict()["conv_stem.weight"])


def test_b0_weights_load_from_a_local_safetensors_file(tmp_path):
    """`--efficientnet-weights FILE`: an ImageNet EfficientNet-B0 in timm's naming (built here in
    code and saved as safetensors) loads with a fresh 2-class head and ImageNet normalisation."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("efficientnet_b0", pretrained=False)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "b0.safetensors")
    model = build_backbone(2, str(tmp_path / "b0.safetensors"))
    assert model.num_classes == 2
    assert torch.equal(model.state_dict()["conv_stem.weight"], source.state_dict()["conv_stem.weight"])
    assert tuple(model.pretrained_cfg["mean"]) == (0.485, 0.456, 0.406)


def test_b0_file_not_found(tmp_path):
    with pytest.raises(EvalError, match=r"EfficientNet-B0 weights not found: .*nope.safetensors"):
        build_backbone(2, str(tmp_path / "nope.safetensors"))


def test_fixed_scale_makes_kid_independent_of_the_feature_scale():
    rng = np.random.default_rng(0)
    real = {"AD": rng.normal(3, 2, (40, 32)), "NON_AD": rng.normal(3.5, 2, (30, 32))}
    syn = {"AD": rng.normal(3.2, 2, (24, 32)), "NON_AD": rng.normal(3.1, 2, (24, 32))}

    def kids(a, b):
        r = {c: a * v + b for c, v in real.items()}
        s = {c: a * v + b for c, v in syn.items()}
        scale = FeatureScale(np.concatenate(list(r.values())))
        fixed = kid.kid_table({c: scale(v) for c, v in r.items()}, {c: scale(v) for c, v in s.items()})
        raw = kid.kid_table(r, s)
        return {k: v.mean for k, v in fixed.items()}, {k: v.mean for k, v in raw.items()}

    fixed1, raw1 = kids(1.0, 0.0)
    fixed2, raw2 = kids(250.0, -7.0)
    for k in fixed1:
        assert fixed2[k] == pytest.approx(fixed1[k], rel=1e-6, abs=1e-12)
    # Without the fixed scale the same data gives other values (the defect the scale removes).
    assert any(abs(raw2[k] - raw1[k]) > 10 * abs(raw1[k]) for k in raw1)
    # After scaling, the reference's mean squared coordinate is 1 and its mean is 0.
    ref = np.concatenate(list(real.values()))
    z = FeatureScale(ref)(ref)
    assert np.mean(z**2) == pytest.approx(1.0) and np.abs(z.mean(0)).max() < 1e-9


def test_constant_features_have_no_scale():
    with pytest.raises(EvalError, match="reference features are constant"):
        FeatureScale(np.ones((5, 3)))


def test_b0_weights_with_unmatched_keys_are_refused_by_name(tmp_path):
    """A file whose keys carry a prefix (or lack tensors) would load as random weights with timm's
    non-strict loading when the class count differs: it is refused, naming the keys."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("efficientnet_b0", pretrained=False)
    prefixed = {f"model.{k}": v.contiguous() for k, v in source.state_dict().items()}
    save_file(prefixed, tmp_path / "prefixed.safetensors")
    with pytest.raises(
        EvalError,
        match=r"prefixed.safetensors does not match timm's efficientnet_b0: \d+ missing key\(s\) \(first: conv_stem.weight, .*unexpected \(first: model\.",
    ):
        build_backbone(2, str(tmp_path / "prefixed.safetensors"))
    # A head for other classes is the one allowed difference; the backbone loads exactly.
    ten = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10)
    save_file({k: v.contiguous() for k, v in ten.state_dict().items()}, tmp_path / "ten.safetensors")
    model = build_backbone(2, str(tmp_path / "ten.safetensors"))
    assert model.num_classes == 2 and torch.equal(model.conv_stem.weight, ten.conv_stem.weight)
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "ten.safetensors").read_bytes()[:1000])
    with pytest.raises(EvalError, match=r"cut.safetensors: not a readable EfficientNet-B0 weights file"):
        build_backbone(2, str(tmp_path / "cut.safetensors"))
