"""The training resolution travels with the checkpoint: sampling, export and reconstruction use it
even where the VAE's config says otherwise (SD 1.5 fine-tuned at 256 keeps sample_size 512)."""

import json

import numpy as np
from PIL import Image
from tiny_model import SMALL

from polypsynth.models import build_tiny, load_components, save_components
from polypsynth.models.loading import resolution_of


def _checkpoint(folder, recorded):
    components = build_tiny(SMALL, resolution=32, seed=1)  # the VAE config says 32
    components.resolution = recorded
    save_components(components, folder)
    return folder


def test_recorded_resolution_wins_over_the_vae_config(tmp_path):
    from polypsynth.export.bundle import export_bundle
    from polypsynth.sampling.loop import sample_batch
    from polypsynth.sampling.model import open_model
    from polypsynth.sampling.request import Settings

    trained_at_64 = _checkpoint(tmp_path / "at64", 64)
    assert json.loads((trained_at_64 / "polypsynth.json").read_text())["resolution"] == 64
    assert resolution_of(load_components(trained_at_64)) == 64
    model = open_model(trained_at_64, "torch")
    assert model.latent_shape == (4, 16, 16) and model.resolution == 64
    images = sample_batch(model, [1], ["AD"], Settings(2, 3.0, "ddim"))
    assert images.shape == (1, 64, 64, 3)
    export_bundle(trained_at_64, tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["resolution"] == 64 and manifest["latent_shape"] == [4, 16, 16]
    # A folder without a recorded resolution (a plain diffusers model) falls back to the VAE config.
    plain = _checkpoint(tmp_path / "plain", None)
    assert resolution_of(load_components(plain)) == 32
    assert open_model(plain, "torch").latent_shape == (4, 8, 8)


def test_reconstruction_at_the_training_resolution(tmp_path):
    from polypsynth.evaluate.reconstruct import write_reconstructions

    folder = _checkpoint(tmp_path / "at64", 64)
    src = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(src)
    written = write_reconstructions(folder, {"AD": [src]}, tmp_path / "recon", progress=False)
    assert Image.open(written["AD"][0]).size == (64, 64)
