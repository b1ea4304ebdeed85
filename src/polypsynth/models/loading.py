"""Load and save the components of a Stable Diffusion model as a diffusers folder.

A saved model is a normal diffusers pipeline folder (model_index.json, safetensors weights), so
`StableDiffusionPipeline.from_pretrained(folder)` loads it unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polypsynth.config import downsampling
from polypsynth.errors import PolypsynthError

# Files a complete model folder holds (weights may also be sharded; see _has_weights).
COMPONENT_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class ModelLoadError(PolypsynthError):
    """A model folder or hub id cannot be loaded."""


@dataclass
class Components:
    # diffusers / transformers modules, duck-typed (those packages' annotations are partial)
    unet: Any  # UNet2DConditionModel
    vae: Any  # AutoencoderKL
    text_encoder: Any  # CLIPTextModel
    tokenizer: Any  # CLIPTokenizer
    scheduler: Any  # the training noise scheduler (DDPM); sampling picks its own from its config
    pretrained_vae: bool = True  # False: the VAE was built in code and needs the autoencoder stage
    resolution: int | None = None  # the training resolution in pixels, when known (polypsynth.json)

    def pipeline(self, scheduler=None):
        """diffusers' StableDiffusionPipeline over these components (with another scheduler if given)."""
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=scheduler or self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))


def missing_files(folder: Path) -> list[str]:
    """What a model folder lacks to be loadable, as paths relative to it."""
    missing = []
    if not (folder / "model_index.json").is_file():
        missing.append("model_index.json")
    for name in ("unet", "vae", "text_encoder"):
        if not (folder / name / "config.json").is_file():
            missing.append(f"{name}/config.json")
        if not _has_weights(folder / name):
            missing.append(f"{name}/*.safetensors")
    if not (folder / "tokenizer").is_dir() or not any((folder / "tokenizer").iterdir()):
        missing.append("tokenizer/")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    return missing


def check_weights(*folders: Path) -> None:
    """Every safetensors file in FOLDERS is whole: safetensors reads its header and checks that the
    file holds every byte the header describes (a truncated or overwritten copy fails here with
    the file named, not deep inside from_pretrained)."""
    from safetensors import SafetensorError, safe_open

    for folder in folders:
        for path in sorted(Path(folder).glob("*.safetensors")):
            try:
                with safe_open(str(path), "pt"):
                    pass
            except (SafetensorError, OSError) as exc:
                raise ModelLoadError(
                    f"{path} is damaged ({str(exc).removeprefix('Error while deserializing header: ')}): "
                    "the file is truncated or altered; copy it again or use another checkpoint"
                ) from exc


def _load_from(source: str, local_files_only: bool, pretrained_vae: bool) -> Components:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    offline = local_files_only
    try:
        unet = UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", use_safetensors=True, local_files_only=offline
        )
        vae = AutoencoderKL.from_pretrained(
            source, subfolder="vae", use_safetensors=True, local_files_only=offline
        )
        text_encoder = CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", use_safetensors=True, local_files_only=offline
        )
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=offline)
        scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=offline)
    except (OSError, ValueError, RuntimeError) as exc:  # a config its weights do not fit, a bad file
        raise ModelLoadError(f"model {source} cannot be loaded: {str(exc).splitlines()[0]}") from exc
    components = Components(unet, vae, text_encoder, tokenizer, scheduler, pretrained_vae=pretrained_vae)
    _check_fit(components, source)
    return components


def _check_fit(components: Components, source: str) -> None:
    """The parts were made for each other: a U-Net copied from another model fails here, named,
    not at its first forward pass ("mat1 and mat2 shapes cannot be multiplied")."""
    unet, vae, text = components.unet.config, components.vae.config, components.text_encoder.config
    pairs = [
        (
            "the U-Net's cross-attention width",
            unet.cross_attention_dim,
            "the text encoder's width",
            text.hidden_size,
        ),
        ("the U-Net's input channels", unet.in_channels, "the VAE's latent channels", vae.latent_channels),
    ]
    for what, value, other, expected in pairs:
        if value != expected:
            raise ModelLoadError(
                f"model {source}: {what} is {value} but {other} is {expected}; its parts come from different models"
            )


def load_pretrained(path_or_id: str | os.PathLike) -> Components:
    """Stable Diffusion components from a local diffusers folder or a hub id.

    A hub id is resolved through the Hugging Face cache and honours HF_HUB_OFFLINE: offline, only
    an already cached copy loads. Weights load from safetensors only.
    """
    path = Path(path_or_id)
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"pretrained model {path} is a file; expected a diffusers model folder")
        missing = missing_files(path)
        if missing:
            raise ModelLoadError(
                f"pretrained model folder {path} is incomplete: missing {', '.join(missing)}"
            )
        check_weights(*(path / name for name in COMPONENT_FOLDERS))
        return _load_from(str(path), local_files_only=True, pretrained_vae=True)
    text = str(path_or_id)
    if text.startswith((".", "/")) or text.count("/") != 1:
        raise ModelLoadError(
            f"pretrained model {text!r}: no such folder, and not a hub id of the form owner/name"
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return _load_from(text, local_files_only=offline, pretrained_vae=True)
    except ModelLoadError as exc:
        hint = " (HF_HUB_OFFLINE is set: only a cached copy can load)" if offline else ""
        raise ModelLoadError(f"cannot load pretrained model {text!r}{hint}: {exc.__cause__ or exc}") from exc


def resolution_of(components: Components) -> int:
    """The resolution a model samples, exports and reconstructs at: the one it was trained at
    (recorded with every checkpoint), else, for a plain diffusers folder, its VAE config's
    sample_size. A VAE config can disagree with the training (SD 1.5 fine-tuned at 256 keeps
    sample_size 512), which is why the recorded value wins."""
    if components.resolution:
        return int(components.resolution)
    return meta_resolution(None, components.vae)


def meta_resolution(folder: str | os.PathLike | None, vae) -> int:
    """The `resolution` recorded in FOLDER/polypsynth.json, else the VAE config's sample_size."""
    meta = Path(folder) / "polypsynth.json" if folder is not None else None
    if meta is not None and meta.is_file():
        recorded = json.loads(meta.read_text()).get("resolution")
        if recorded:
            return int(recorded)
    size = vae.config.sample_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def latent_shape(components: Components) -> tuple[int, int, int]:
    """(channels, height, width) of the latents the model samples at its resolution."""
    vae = components.vae
    down = downsampling(vae.config.block_out_channels)
    resolution = resolution_of(components)
    return (int(vae.config.latent_channels), resolution // down, resolution // down)


def class_prompts(folder: str | os.PathLike) -> dict[str, str] | None:
    """The class -> prompt map a checkpoint was trained with (FOLDER/polypsynth.json), if recorded."""
    meta = Path(folder) / "polypsynth.json"
    return json.loads(meta.read_text()).get("class_prompts") if meta.is_file() else None


def encode_texts(components: Components, texts: list[str], device=None, chunk: int = 64):
    """The text encoder's last hidden states (len(texts), tokens, dim), float32 on the CPU: the
    conditioning of training and of sampling alike, each prompt padded to the tokenizer's length."""
    import torch

    tok = components.tokenizer(
        texts,
        padding="max_length",
        max_length=components.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    encoder = components.text_encoder if device is None else components.text_encoder.to(device)
    with torch.no_grad():
        hidden = [
            encoder(tok.input_ids[i : i + chunk].to(encoder.device))[0].float().cpu()
            for i in range(0, len(texts), chunk)
        ]
    return torch.cat(hidden)


def load_components(folder: str | os.PathLike) -> Components:
    """A model folder written by `save_components` (a checkpoint) or any local diffusers folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    missing = missing_files(folder)
    if missing:
        raise ModelLoadError(f"model folder {folder} is incomplete: missing {', '.join(missing)}")
    check_weights(*(folder / name for name in COMPONENT_FOLDERS))
    meta = folder / "polypsynth.json"
    recorded = json.loads(meta.read_text()) if meta.is_file() else {}
    components = _load_from(
        str(folder), local_files_only=True, pretrained_vae=recorded.get("pretrained_vae", True)
    )
    components.resolution = recorded.get("resolution")
    return components


def save_components(components: Components, folder: str | os.PathLike) -> None:
    """Write a diffusers pipeline folder (safetensors) plus polypsynth.json."""
    folder = Path(folder)
    components.pipeline().save_pretrained(folder, safe_serialization=True)
    (folder / "polypsynth.json").write_text(
        json.dumps(
            {"pretrained_vae": components.pretrained_vae, "resolution": components.resolution}, indent=2
        )
    )
