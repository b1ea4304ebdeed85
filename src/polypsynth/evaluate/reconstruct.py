"""Real images encoded and decoded by a model's VAE: a reference for class fidelity.

A latent diffusion model can only draw what its autoencoder can represent, so judging real test
images after one encode / decode (the posterior mode) tells whether the autoencoder keeps each
class's cues: when the judge no longer recognises a reconstructed class, no amount of U-Net
training is likely to bring it back. It is a reference, not a bound: samples have scored above it
(the judge is a linear probe with its own biases). The VAE is trained only in the autoencoder stage
(or comes pretrained), so every checkpoint of one run shares it.

Layout written by `write_reconstructions(model, images, out)`:

    OUT/<class>/<index>.png      the reconstruction of the index-th source image of that class
    OUT/sources.json             class -> source image paths, in index order
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from polypsynth.atomic import atomic_dir, prepare_target
from polypsynth.data.dataset import to_uint8
from polypsynth.evaluate.features import load_batch
from polypsynth.models.loading import ModelLoadError, _has_weights, check_weights, meta_resolution
from polypsynth.sampling.output import image_name


def load_vae(model: str | os.PathLike):
    """The AutoencoderKL of a checkpoint or diffusers model folder (safetensors, no download)."""
    from diffusers import AutoencoderKL

    folder = Path(model)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder} (expected a checkpoint or diffusers folder)")
    if not _has_weights(folder / "vae") or not (folder / "vae" / "config.json").is_file():
        raise ModelLoadError(
            f"model folder {folder} has no autoencoder: expected vae/config.json and vae/*.safetensors"
        )
    check_weights(folder / "vae")
    vae = AutoencoderKL.from_pretrained(
        str(folder), subfolder="vae", use_safetensors=True, local_files_only=True
    )
    return vae.eval()


@torch.no_grad()
def reconstruct(
    vae, paths: Sequence[Path], batch: int = 16, device: str = "cpu", size: int | None = None
) -> np.ndarray:
    """uint8 (N, R, R, 3): each image brought to the model's training resolution `size` (default:
    the VAE config's) as training does (short side resized, centre square; features.load_batch),
    encoded, decoded."""

    size = size or meta_resolution(None, vae)
    vae = vae.to(device)
    out = []
    for i in range(0, len(paths), batch):
        x = load_batch(paths[i : i + batch], size).to(device) * 2.0 - 1.0
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample
        out.append(to_uint8(y))
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


def write_reconstructions(
    model: str | os.PathLike,
    images: Mapping[str, Sequence[Path]],
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    batch: int = 16,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, list[Path]]:
    """Reconstruct every class's images through the model's VAE into OUT (written atomically)."""

    prepare_target(out, overwrite, "reconstruction folder")
    vae = load_vae(model)
    size = meta_resolution(model, vae)  # the training resolution recorded with the checkpoint
    out = Path(out)
    with atomic_dir(out, overwrite, "reconstruction folder") as tmp:
        for c, paths in images.items():
            (tmp / c).mkdir()
            chunks = range(0, len(paths), batch)
            for i in tqdm(chunks, desc=f"reconstruct {c}", unit="batch", disable=not progress):
                for j, pixels in enumerate(reconstruct(vae, paths[i : i + batch], batch, device, size)):
                    Image.fromarray(pixels).save(tmp / c / image_name(i + j))
        sources = {c: [str(p) for p in paths] for c, paths in images.items()}
        (tmp / "sources.json").write_text(json.dumps(sources, indent=2))
    return {c: [out / c / image_name(i) for i in range(len(paths))] for c, paths in images.items()}
