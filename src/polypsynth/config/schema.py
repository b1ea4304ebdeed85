"""The configuration's parts, one dataclass each with a docstring per field (YAML holds values only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def downsampling(widths) -> int:
    """How much a diffusers encoder of these block widths shrinks an image: 2 per block after the first."""
    return 2 ** (len(widths) - 1)


@dataclass
class DataSource:
    """One dataset to read records from (see polypsynth.data.sources)."""

    kind: Literal["phantom", "image_folder", "csv", "sun", "cvc_classif", "cvc_segment"]
    """Layout of the dataset: phantom, image_folder, csv, sun (SUN database or SUN-SEG),
    cvc_classif (CVC-ClinicHDclassif), cvc_segment (CVC-ClinicHDsegment)."""
    path: str
    """Folder (or CSV file for kind csv) holding the dataset; relative paths are taken from the
    directory the command runs in."""
    subset: str | None = None
    """phantom only: stage1, classif or unlabelled."""
    split: str | None = None
    """Keep only records of this split (train or test); null keeps all."""
    labels: list[str] | None = None
    """Keep only records with these labels (after mapping); null keeps all."""
    frame_step: int = 1
    """sun only: keep every n-th frame of each video case (consecutive frames are near-duplicates)."""
    label_map: dict[str, str] = field(default_factory=dict)
    """Extra label names mapped to AD / NON_AD / polyp / non_polyp, on top of the built-in map."""


@dataclass
class StageConfig:
    """One training stage. Stages run in the order autoencoder, pretrain, finetune."""

    enabled: bool = True
    """Run this stage. The autoencoder stage is skipped anyway when the VAE comes pretrained."""
    steps: int = 0
    """Optimizer steps in this stage."""
    learning_rate: float = 1e-4
    """Peak learning rate (AdamW)."""
    lr_warmup_steps: int = 0
    """Linear warm-up steps before the schedule."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: constant, or cosine decay to 0 at the stage's last step."""
    batch_size: int = 8
    """Images per optimizer step per device (before gradient accumulation)."""
    gradient_accumulation: int = 1
    """Micro-batches accumulated into one optimizer step."""
    checkpoint_every: int = 0
    """Save a checkpoint every n steps of this stage (0: only at the end of the stage)."""
    freeze: list[str] = field(default_factory=list)
    """U-Net module name prefixes kept frozen, e.g. conv_in, down_blocks.0, down_blocks.1."""
    data: list[DataSource] = field(default_factory=list)
    """Main data of the stage."""
    replay: list[DataSource] = field(default_factory=list)
    """finetune: stage-1 data replayed to keep what pretraining learnt."""
    replay_share: float = 0.0
    """Share of each batch drawn from `replay` (0 to <1)."""
    unlabelled: list[DataSource] = field(default_factory=list)
    """finetune: high-quality polyp images without pathology labels."""
    unlabelled_share: float = 0.0
    """Share of each batch drawn from `unlabelled` (0 to <1)."""
    balance_classes: bool = False
    """Draw the main images so every label is equally likely (inverse-frequency weights), e.g.
    AD and NON_AD where the data hold twice as many AD; replay and unlabelled draws are unchanged."""
    kl_weight: float = 1e-6
    """autoencoder: weight of the KL term against the reconstruction loss."""
    crop: int | None = None
    """autoencoder: train on random square crops of this many pixels (one position per batch);
    null: whole images. The VAE is convolutional, so it learns the same local code from crops at a
    fraction of the cost per step (32 of 64 px: about 2x faster on a CPU)."""
    crop_share: float = 1.0
    """autoencoder, with `crop`: the share of steps, from the first, trained on crops; the rest use
    whole images, so the group norms and mid-block attention end on whole-image statistics, as the
    VAE sees them when it encodes and decodes."""


@dataclass
class StagesConfig:
    """The three stages of the recipe."""

    autoencoder: StageConfig = field(default_factory=lambda: StageConfig(enabled=False))
    """Trains the VAE on the stage's images (tiny models only: no pretrained VAE exists offline)."""
    pretrain: StageConfig = field(default_factory=StageConfig)
    """Study stage 1: polyp / non-polyp frames with quality-specific prompts."""
    finetune: StageConfig = field(default_factory=StageConfig)
    """Study stage 2: AD / NON_AD with class prompts, replay and unlabelled images, frozen layers."""


@dataclass
class TinyModelConfig:
    """Shape of the Stable-Diffusion-shaped model built offline when model.pretrained is null."""

    unet_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    """U-Net block widths; the first blocks are down/up blocks with cross-attention."""
    layers_per_block: int = 1
    """ResNet layers per U-Net block."""
    attention_head_dim: int = 16
    """Channels per attention head in the U-Net (heads per block = block width / this)."""
    vae_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    """VAE block widths; the latent is downsampled 2**(len-1) times (64 px -> 16x16 latents)."""
    latent_channels: int = 4
    """Channels of the latent image."""
    text_hidden_size: int = 32
    """Width of the CLIP text encoder (also the U-Net cross-attention width)."""
    text_layers: int = 2
    """Transformer layers of the CLIP text encoder."""
    text_heads: int = 4
    """Attention heads of the CLIP text encoder."""
    max_text_length: int = 77
    """Tokenizer length; the tokenizer is character-level, so prompts need about 60 positions."""


@dataclass
class ModelConfig:
    """Which diffusion model to fine-tune."""

    pretrained: str | None = None
    """Local diffusers folder or hub id of a Stable Diffusion model; null builds the tiny model."""
    resolution: int = 64
    """Training and sampling resolution in pixels (a multiple of 8)."""
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    """What the U-Net predicts (tiny model only; a pretrained model keeps its scheduler's)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model."""


@dataclass
class TrainConfig:
    """How the stages are run."""

    seed: int = 0
    """Seed of model init, data order and noise."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """accelerate mixed precision."""
    gradient_checkpointing: bool = False
    """Trade compute for memory in the U-Net."""
    ema: bool = False
    """Keep an exponential moving average of the U-Net weights (saved in checkpoints)."""
    ema_decay: float = 0.999
    """EMA decay."""
    cond_dropout: float = 0.1
    """Share of training prompts replaced by the empty prompt (classifier-free guidance needs it)."""
    min_snr_gamma: float | None = None
    """Min-SNR loss weighting gamma (e.g. 5.0); null for plain MSE."""
    latent_cache: bool = False
    """Encode every image with the VAE (and each prompt) once and train from the cache."""
    flip: bool = True
    """Random horizontal and vertical flips."""
    num_workers: int = 0
    """DataLoader worker processes."""
    log_every: int = 10
    """Log loss and learning rate every n steps."""
    sample_grid: bool = True
    """Write a small sample grid beside each checkpoint."""
