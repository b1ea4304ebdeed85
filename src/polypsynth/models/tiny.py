"""A complete Stable-Diffusion-shaped model made in code, with no download.

The same component classes as Stable Diffusion 1.x (UNet2DConditionModel, AutoencoderKL,
CLIPTextModel + CLIPTokenizer, DDPMScheduler), only small. The tokenizer is CLIP's byte-level BPE
with an empty merge list, i.e. one token per character: it needs no vocabulary download, and with
CLIP's 77 positions whole prompts fit (so "an adenomatous" and "a non-adenomatous" differ).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from polypsynth.config import TinyModelConfig, downsampling
from polypsynth.models.loading import Components

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2 / CLIP)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def build_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def build_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    """Stable Diffusion's training noise schedule."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
    )


def _check_shapes(cfg: TinyModelConfig, resolution: int) -> None:
    factor = downsampling(cfg.vae_channels) * downsampling(cfg.unet_channels)
    if resolution % factor:
        raise ValueError(
            f"resolution {resolution} must be divisible by {factor} "
            f"for vae_channels={cfg.vae_channels} and unet_channels={cfg.unet_channels}"
        )
    bad = [c for c in cfg.unet_channels if c % cfg.attention_head_dim]
    if bad:
        raise ValueError(
            f"attention_head_dim {cfg.attention_head_dim} must divide every unet_channels entry "
            f"{cfg.unet_channels}; {bad} are not multiples of it"
        )


def build_tiny(
    cfg: TinyModelConfig | None = None, resolution: int = 64, prediction_type: str = "epsilon", seed: int = 0
) -> Components:
    """Randomly initialised tiny components (deterministic for a seed)."""
    cfg = cfg or TinyModelConfig()
    _check_shapes(cfg, resolution)
    down = downsampling(cfg.vae_channels)
    # diffusers' UNet2DConditionModel reads its `attention_head_dim` argument as the number of
    # heads (a legacy name); the config's value is the width of one head, so heads per block are
    # computed here. Head width 4 (8 heads on 32 channels) made CPU attention half of a step.
    heads = tuple(c // cfg.attention_head_dim for c in cfg.unet_channels)
    groups = min(8, *cfg.unet_channels, *cfg.vae_channels)
    tokenizer = build_tokenizer(cfg.max_text_length)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=cfg.text_hidden_size,
                intermediate_size=cfg.text_hidden_size * 4,
                num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.text_heads,
                max_position_embeddings=cfg.max_text_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        n = len(cfg.unet_channels)
        unet = UNet2DConditionModel(
            sample_size=resolution // down,
            in_channels=cfg.latent_channels,
            out_channels=cfg.latent_channels,
            block_out_channels=tuple(cfg.unet_channels),
            layers_per_block=cfg.layers_per_block,
            down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
            cross_attention_dim=cfg.text_hidden_size,
            attention_head_dim=heads,
            norm_num_groups=groups,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(cfg.vae_channels),
            down_block_types=("DownEncoderBlock2D",) * len(cfg.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(cfg.vae_channels),
            latent_channels=cfg.latent_channels,
            norm_num_groups=groups,
            sample_size=resolution,
            scaling_factor=1.0,  # set from the data after the autoencoder stage
        )
    return Components(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=build_scheduler(prediction_type),
        pretrained_vae=False,
    )
