"""Real images through a checkpoint's VAE (a fidelity reference), checked against a direct pass."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from diffusers import AutoencoderKL
from PIL import Image

from polypsynth.cli import main
from polypsynth.data.sources import load_phantom
from polypsynth.errors import EvalError
from polypsynth.evaluate.reconstruct import write_reconstructions
from polypsynth.evaluate.sets import real_data, reconstruction_set
from polypsynth.models.loading import ModelLoadError


def test_reconstructions_match_a_direct_vae_pass(tiny_checkpoint, phantom_small, tmp_path):
    test = real_data(load_phantom(phantom_small, "classif")).test
    out = tmp_path / "recon"
    written = write_reconstructions(tiny_checkpoint, test, out, batch=2, progress=False)
    assert {c: len(v) for c, v in written.items()} == {c: len(v) for c, v in test.items()}
    assert json.loads((out / "sources.json").read_text()) == {c: [str(p) for p in v] for c, v in test.items()}
    assert reconstruction_set(out) == written
    vae = AutoencoderKL.from_pretrained(tiny_checkpoint / "vae").eval()
    for c in test:
        for src, got in zip(test[c], written[c], strict=True):
            pixels = torch.from_numpy(np.array(Image.open(src).convert("RGB"))).permute(2, 0, 1)[None].float()
            x = F.interpolate(pixels / 127.5 - 1.0, size=(32, 32), mode="bilinear", antialias=True)
            with torch.no_grad():
                y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)  # mode = mean
            expected = ((y[0] + 1) * 127.5).permute(1, 2, 0).numpy()
            image = np.asarray(Image.open(got))
            assert image.shape == (32, 32, 3)  # the VAE's resolution, not the source's 64 px
            assert np.abs(image.astype(np.float32) - expected).max() <= 1.0


def test_reconstruct_cli_and_bad_inputs(tiny_checkpoint, phantom_small, tmp_path):
    out = tmp_path / "recon"
    args = ["reconstruct", "--model", str(tiny_checkpoint), "--real", str(phantom_small), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    counts = {c: len(list((out / c).glob("*.png"))) for c in ("AD", "NON_AD")}
    last_line = result.output.strip().splitlines()[-1]  # after the progress bars
    assert last_line.endswith(f"wrote {counts['AD']} AD, {counts['NON_AD']} NON_AD reconstructions to {out}")
    assert counts == {c: len(v) for c, v in real_data(load_phantom(phantom_small, "classif")).test.items()}
    # An existing folder is kept unless --overwrite.
    result = CliRunner().invoke(main, args)
    assert (
        result.exit_code == 1
        and f"reconstruction folder {out} is not empty; pass --overwrite" in result.output
    )
    # A model folder without an autoencoder: a clear error and nothing written.
    no_vae = tmp_path / "no-vae"
    shutil.copytree(tiny_checkpoint, no_vae, ignore=shutil.ignore_patterns("vae"))
    target = tmp_path / "never"
    with pytest.raises(
        ModelLoadError, match=r"model folder .*no-vae has no autoencoder: expected vae/config.json"
    ):
        write_reconstructions(no_vae, {"AD": []}, target)
    assert not target.exists()
    # A reconstruction folder missing a class is refused by name.
    shutil.rmtree(out / "NON_AD")
    with pytest.raises(
        EvalError, match=r"reconstruction folder .*recon has no NON_AD images \(expected .*NON_AD/\*\.png\)"
    ):
        reconstruction_set(out)
