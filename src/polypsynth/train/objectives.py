"""What a stage trains, behind one interface: the autoencoder (tiny models only: reconstruction
plus KL) or the diffusion U-Net (noise or velocity prediction, optionally with an EMA copy).

Each objective sets its modules' trainable flags, holds the dataset its batches come from (the
diffusion stage may swap pixels for cached latents), computes one micro-batch's loss with the
step's generator, and names the module a checkpoint saves."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast
from diffusers import UNet2DConditionModel
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader, Dataset

from polypsynth.config import PolypsynthConfig, StageConfig
from polypsynth.data.prompts import prompt_for
from polypsynth.data.records import Record
from polypsynth.models import Components
from polypsynth.train.cache import build_latent_cache, encode_prompts
from polypsynth.train.freeze import freeze_modules
from polypsynth.train.steps import (
    VaeLoss,
    diffusion_loss,
    random_crop,
    random_flips,
    sample_latents,
    text_context,
)


@torch.no_grad()
def fit_scaling_factor(vae, dataset: Dataset, device, n: int = 256) -> float:
    """1 / std of the latents, so the diffusion model sees unit-variance inputs (as SD's 0.18215)."""
    loader = DataLoader(dataset, batch_size=32, shuffle=False)
    latents, seen = [], 0
    for batch in loader:
        latents.append(vae.encode(batch["pixel_values"].to(device, vae.dtype)).latent_dist.mean.float().cpu())
        seen += len(batch["pixel_values"])
        if seen >= n:
            break
    return float(1.0 / torch.cat(latents).std().clamp_min(1e-6))


@dataclass
class AutoencoderObjective:
    """The VAE learns to reconstruct (random flips, and random crops for the first `crop_share`
    of the steps); at its last step it fits the latent scaling factor the diffusion stages use."""

    components: Components
    cfg: PolypsynthConfig
    stage: StageConfig
    dataset: Dataset
    device: torch.device
    ema: EMAModel | None = None  # the autoencoder keeps no EMA copy

    def __post_init__(self) -> None:
        self.components.vae.requires_grad_(True).train()
        self.components.unet.requires_grad_(False)

    @property
    def trainable(self) -> torch.nn.Module:
        return self.components.vae

    def module(self) -> torch.nn.Module:
        """The module whose forward computes the loss (what DDP wraps with several processes)."""
        return VaeLoss(self.components.vae, self.stage.kl_weight)

    def saved(self, unwrapped: VaeLoss) -> torch.nn.Module:
        return unwrapped.vae

    def loss(self, model, batch: dict, step: int, gen: torch.Generator) -> torch.Tensor:
        pixels = batch["pixel_values"].to(self.device)
        if self.cfg.train.flip:
            (pixels,) = random_flips([pixels], gen)
        cropping = step < round(self.stage.crop_share * self.stage.steps)
        return model(random_crop(pixels, self.stage.crop if cropping else None, gen), gen)

    def after_step(self, stage_step: int, accelerator: Accelerator) -> None:
        if stage_step != self.stage.steps:
            return
        # Every process needs the scale for the later stages: fitted everywhere, rank 0's kept.
        vae = self.components.vae
        vae.eval()
        factor = torch.tensor([fit_scaling_factor(vae, self.dataset, self.device)], device=self.device)
        vae.register_to_config(scaling_factor=float(broadcast(factor, from_process=0)[0]))


@dataclass
class DiffusionObjective:
    """The U-Net learns to predict noise (or velocity) from the frozen VAE's latents and the
    frozen text encoder's prompt embeddings, some dropped for classifier-free guidance; the
    stage's `freeze` modules stay fixed."""

    components: Components
    cfg: PolypsynthConfig
    stage: StageConfig
    dataset: Dataset
    device: torch.device
    records: list[Record]
    where: str  # the stage's config path, for freeze errors
    progress: bool = True
    ema: EMAModel | None = None

    def __post_init__(self) -> None:
        vae, unet, cfg = self.components.vae, self.components.unet, self.cfg
        vae.requires_grad_(False).eval()
        unet.requires_grad_(True).train()
        freeze_modules(unet, self.stage.freeze, where=f"{self.where}.freeze")
        if cfg.train.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        prompts = [prompt_for(r, cfg.prompts) for r in self.records]
        self.embeddings = encode_prompts(self.components, prompts, self.device)
        if cfg.train.latent_cache:
            self.dataset = build_latent_cache(vae, self.dataset, self.device, progress=self.progress)

    @property
    def trainable(self) -> torch.nn.Module:
        return self.components.unet

    def with_ema(self) -> DiffusionObjective:
        """Keeps an exponential moving average of the U-Net's weights (cfg.train.ema)."""
        unet = self.components.unet
        self.ema = EMAModel(
            unet.parameters(),
            decay=self.cfg.train.ema_decay,
            model_cls=UNet2DConditionModel,
            model_config=unet.config,
        )
        return self

    def module(self) -> torch.nn.Module:
        return self.components.unet

    def saved(self, unwrapped: torch.nn.Module) -> torch.nn.Module:
        return unwrapped

    def loss(self, model, batch: dict, step: int, gen: torch.Generator) -> torch.Tensor:
        train = self.cfg.train
        latents = sample_latents(batch, self.components.vae, gen, train.flip, self.device)
        context = text_context(list(batch["prompt"]), self.embeddings, gen, train.cond_dropout, self.device)
        return diffusion_loss(
            model, self.components.scheduler, latents, context, gen, min_snr_gamma=train.min_snr_gamma
        )

    def after_step(self, stage_step: int, accelerator: Accelerator) -> None:
        if self.ema is not None:
            self.ema.step(self.components.unet.parameters())


Objective = AutoencoderObjective | DiffusionObjective
