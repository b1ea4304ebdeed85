"""Checks of values that depend on each other, run by `PolypsynthConfig.validate()` before
anything is built: each error names the key and what it expected."""

from __future__ import annotations

import math
from typing import Any

from polypsynth.config.schema import (
    ModelConfig,
    StageConfig,
    StagesConfig,
    TinyModelConfig,
    TrainConfig,
    downsampling,
)
from polypsynth.errors import ConfigError


def check_stage(name: str, stage: StageConfig, model: ModelConfig) -> None:
    where = f"stage.{name}"
    if stage.steps < 0:
        raise ConfigError(f"{where}.steps must be >= 0, got {stage.steps}")
    if stage.enabled and stage.steps > 0 and stage.batch_size <= 0:
        raise ConfigError(f"{where}.batch_size must be > 0, got {stage.batch_size}")
    if stage.gradient_accumulation < 1:
        raise ConfigError(f"{where}.gradient_accumulation must be >= 1, got {stage.gradient_accumulation}")
    if not (math.isfinite(stage.learning_rate) and stage.learning_rate > 0):
        raise ConfigError(f"{where}.learning_rate must be a positive number, got {stage.learning_rate}")
    if stage.checkpoint_every < 0:
        raise ConfigError(f"{where}.checkpoint_every must be >= 0, got {stage.checkpoint_every}")
    if stage.crop is not None:
        down = downsampling(model.tiny.vae_channels)
        if name != "autoencoder":
            raise ConfigError(f"{where}.crop applies to the autoencoder stage only; remove it")
        if not (0 < stage.crop <= model.resolution and stage.crop % down == 0):
            raise ConfigError(
                f"{where}.crop must be a multiple of {down} (the VAE's downsampling) between "
                f"{down} and model.resolution {model.resolution}, got {stage.crop}"
            )
    if not 0.0 <= stage.crop_share <= 1.0:
        raise ConfigError(f"{where}.crop_share must be in [0, 1], got {stage.crop_share}")
    for share_name in ("replay_share", "unlabelled_share"):
        share = getattr(stage, share_name)
        if not 0.0 <= share < 1.0:
            raise ConfigError(f"{where}.{share_name} must be in [0, 1), got {share}")
    if stage.replay_share + stage.unlabelled_share >= 1.0:
        raise ConfigError(
            f"{where}: replay_share + unlabelled_share must be < 1 so the main data is drawn, "
            f"got {stage.replay_share + stage.unlabelled_share}"
        )
    if stage.replay_share > 0 and not stage.replay:
        raise ConfigError(f"{where}.replay_share is {stage.replay_share} but {where}.replay is empty")
    if stage.unlabelled_share > 0 and not stage.unlabelled:
        raise ConfigError(
            f"{where}.unlabelled_share is {stage.unlabelled_share} but {where}.unlabelled is empty"
        )
    for i, src in enumerate([*stage.data, *stage.replay, *stage.unlabelled]):
        if src.kind == "phantom" and src.subset not in ("stage1", "classif", "unlabelled"):
            raise ConfigError(
                f"{where} source {i} ({src.path}): phantom needs subset stage1, classif or "
                f"unlabelled, got {src.subset!r}"
            )
        if src.frame_step < 1:
            raise ConfigError(f"{where} source {i} ({src.path}): frame_step must be >= 1")


def check_numbers(train: TrainConfig, stages: StagesConfig) -> None:
    """Counts and rates that would fail, or divide by zero, only once training runs."""
    checks: list[tuple[str, Any, bool, str]] = [
        ("train.log_every", train.log_every, train.log_every >= 1, ">= 1"),
        ("train.num_workers", train.num_workers, train.num_workers >= 0, ">= 0"),
    ]
    gamma = train.min_snr_gamma
    checks.append(
        (
            "train.min_snr_gamma",
            gamma,
            gamma is None or (math.isfinite(gamma) and gamma > 0),
            "> 0 or null",
        )
    )
    for name in ("autoencoder", "pretrain", "finetune"):
        stage: StageConfig = getattr(stages, name)
        checks.append(
            (f"stage.{name}.lr_warmup_steps", stage.lr_warmup_steps, stage.lr_warmup_steps >= 0, ">= 0")
        )
        checks.append((f"stage.{name}.kl_weight", stage.kl_weight, stage.kl_weight >= 0, ">= 0"))
    for key, value, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{key} must be {expected}, got {value}")


def check_tiny(tiny: TinyModelConfig, resolution: int) -> None:
    """The tiny model's shape, checked before anything is built (diffusers and transformers
    would refuse it deep inside their constructors)."""
    where = "model.tiny"
    for key in ("unet_channels", "vae_channels"):
        widths = getattr(tiny, key)
        if not widths or any(w < 1 for w in widths):
            raise ConfigError(f"{where}.{key} must be a non-empty list of positive widths, got {widths}")
    for key in (
        "layers_per_block",
        "attention_head_dim",
        "latent_channels",
        "text_hidden_size",
        "text_layers",
        "text_heads",
        "max_text_length",
    ):
        if getattr(tiny, key) < 1:
            raise ConfigError(f"{where}.{key} must be >= 1, got {getattr(tiny, key)}")
    bad = [c for c in tiny.unet_channels if c % tiny.attention_head_dim]
    if bad:
        raise ConfigError(
            f"{where}.attention_head_dim {tiny.attention_head_dim} (channels per head) must divide every "
            f"{where}.unet_channels entry {tiny.unet_channels}; {bad} are not multiples of it"
        )
    if tiny.text_hidden_size % tiny.text_heads:
        raise ConfigError(
            f"{where}.text_hidden_size {tiny.text_hidden_size} must be a multiple of {where}.text_heads "
            f"{tiny.text_heads} (each head takes an equal share)"
        )
    groups = min(8, *tiny.unet_channels, *tiny.vae_channels)  # the tiny model's GroupNorm groups
    uneven = [c for c in [*tiny.unet_channels, *tiny.vae_channels] if c % groups]
    if uneven:
        raise ConfigError(
            f"{where}: every unet_channels and vae_channels width must be a multiple of {groups} (the group "
            f"norms' groups), got {uneven}"
        )
    factor = downsampling(tiny.vae_channels) * downsampling(tiny.unet_channels)
    if resolution % factor:
        raise ConfigError(
            f"model.resolution {resolution} must be divisible by {factor} for {where}.vae_channels "
            f"{tiny.vae_channels} and {where}.unet_channels {tiny.unet_channels}"
        )
