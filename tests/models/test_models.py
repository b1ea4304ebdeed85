import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from tiny_model import SMALL

from polypsynth.data.prompts import CLASS_PROMPTS
from polypsynth.models import build_tiny, load_components, load_pretrained, save_components
from polypsynth.models.loading import ModelLoadError


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_components(build_tiny(SMALL, resolution=32, seed=1), folder)
    return folder


def test_build_is_deterministic_for_a_seed():
    a, b, c = build_tiny(SMALL, 32, seed=1), build_tiny(SMALL, 32, seed=1), build_tiny(SMALL, 32, seed=2)
    wa, wb, wc = (m.unet.conv_in.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_attention_head_dim_is_the_width_of_one_head():
    """diffusers reads the U-Net's `attention_head_dim` argument as a head count; the config's value
    is the width of a head, whatever the block's width (8 heads of 4 channels made CPU attention
    half of a training step)."""
    from dataclasses import replace

    unet = build_tiny(replace(SMALL, unet_channels=[32, 64], attention_head_dim=16), 32).unet
    attentions = [m for name, m in unet.named_modules() if name.endswith(("attn1", "attn2"))]
    widths = {(m.heads, m.inner_dim // m.heads) for m in attentions}
    assert len(attentions) == 8 and widths == {(2, 16), (4, 16)}
    with pytest.raises(
        ValueError, match=r"attention_head_dim 24 must divide every unet_channels entry \[16, 32\]"
    ):
        build_tiny(replace(SMALL, attention_head_dim=24), 32)


def test_tokenizer_keeps_whole_class_prompts_apart():
    tok = build_tiny(SMALL, 32).tokenizer
    ids = tok(list(CLASS_PROMPTS.values()), padding="max_length", max_length=77, truncation=True).input_ids
    assert ids[0] != ids[1]
    n_real = [sum(1 for i in row if i != tok.pad_token_id) for row in ids]
    assert all(n < 77 for n in n_real)  # nothing truncated
    assert tok.decode(ids[1], skip_special_tokens=True).replace(" ", "") == CLASS_PROMPTS["NON_AD"].replace(
        " ", ""
    )


def test_saved_folder_loads_in_plain_diffusers_and_samples(tiny_folder):
    assert (tiny_folder / "model_index.json").is_file()
    assert (tiny_folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folder)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "a high quality colonoscopy image of an adenomatous polyp",
        num_inference_steps=3,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert out.shape == (1, 32, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.std() > 0


def test_load_pretrained_from_a_local_folder_gives_the_same_weights(tiny_folder):
    loaded = load_pretrained(tiny_folder)
    original = build_tiny(SMALL, 32, seed=1)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(loaded, name).state_dict(), getattr(original, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.scheduler.config.prediction_type == "epsilon"
    assert load_components(tiny_folder).pretrained_vae is False  # built in code: needs the autoencoder stage


def test_incomplete_folder_names_what_is_missing(tiny_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (broken / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(
        ModelLoadError, match=r"is incomplete: missing unet/\*.safetensors, scheduler/scheduler_config.json"
    ):
        load_pretrained(broken)


def test_bad_names_and_offline_hub(monkeypatch, tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder, and not a hub id"):
        load_pretrained(tmp_path / "nowhere" / "deeper")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelLoadError, match=r"cannot load pretrained model 'nobody/no-such-model' \(HF_HUB_OFFLINE is set"
    ):
        load_pretrained("nobody/no-such-model")
