"""One training step's arithmetic: latents, noise, the diffusion loss and the VAE loss.

All randomness comes from the CPU generator passed in (seeded per step by the recipe), drawn on
the CPU and moved to the device, so results do not depend on the device's RNG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr

from polypsynth.data.prompts import UNCONDITIONAL_PROMPT


def _randn(shape, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=gen).to(like.device, like.dtype)


def random_flips(tensors: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    """The same per-sample horizontal and vertical flips applied to every tensor of the list."""
    n = tensors[0].shape[0]
    h = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1, 1)
    v = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1, 1)
    out = []
    for x in tensors:
        hx, vx = h.to(x.device), v.to(x.device)
        x = torch.where(hx, x.flip(-1), x)
        out.append(torch.where(vx, x.flip(-2), x))
    return out


def random_crop(pixels: torch.Tensor, size: int | None, gen: torch.Generator) -> torch.Tensor:
    """One random `size` x `size` window of the batch (the same position for every image);
    the batch unchanged when `size` is None or the whole image."""
    height, width = pixels.shape[-2:]
    if size is None or (size == height and size == width):
        return pixels
    top = int(torch.randint(0, height - size + 1, (1,), generator=gen))
    left = int(torch.randint(0, width - size + 1, (1,), generator=gen))
    return pixels[..., top : top + size, left : left + size]


def sample_latents(batch: dict, vae, gen: torch.Generator, flip: bool, device) -> torch.Tensor:
    """Scaled latents of a batch: from the latent cache when present, else by encoding pixels."""
    if "latent_mean" in batch:
        mean, logvar = batch["latent_mean"].to(device), batch["latent_logvar"].to(device)
        if flip:
            mean, logvar = random_flips([mean, logvar], gen)
    else:
        pixels = batch["pixel_values"].to(device)
        if flip:
            (pixels,) = random_flips([pixels], gen)
        with torch.no_grad():
            dist = vae.encode(pixels.to(vae.dtype)).latent_dist
        mean, logvar = dist.mean.float(), dist.logvar.float()
    latents = mean + torch.exp(0.5 * logvar) * _randn(mean.shape, gen, mean)
    return latents * vae.config.scaling_factor


def text_context(
    prompts: list[str], embeddings: dict[str, torch.Tensor], gen: torch.Generator, dropout: float, device
) -> torch.Tensor:
    """Prompt embeddings, each replaced by the unconditional one with probability `dropout`
    (classifier-free guidance needs the model to know both)."""
    drop = torch.rand(len(prompts), generator=gen) < dropout
    chosen = [UNCONDITIONAL_PROMPT if d else p for p, d in zip(prompts, drop.tolist(), strict=True)]
    return torch.stack([embeddings[p] for p in chosen]).to(device)


def diffusion_loss(unet, scheduler, latents, context, gen: torch.Generator, *, min_snr_gamma: float | None):
    """Noise-prediction (epsilon) or velocity (v-prediction) MSE, optionally Min-SNR weighted."""
    n = latents.shape[0]
    noise = _randn(latents.shape, gen, latents)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=gen).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}; expected epsilon or v_prediction")
    pred = unet(noisy, timesteps, context).sample.float()
    if min_snr_gamma is None:
        return F.mse_loss(pred, target.float())
    snr = compute_snr(scheduler, timesteps)
    weight = torch.clamp(snr, max=min_snr_gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)
    per_sample = F.mse_loss(pred, target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weight).mean()


def vae_loss(vae, pixels, gen: torch.Generator, kl_weight: float):
    """Reconstruction (MSE + L1) plus a small KL term, as in the latent diffusion autoencoder
    without its adversarial and perceptual terms (no pretrained network exists offline)."""
    posterior = vae.encode(pixels).latent_dist
    z = posterior.mean + posterior.std * _randn(posterior.mean.shape, gen, posterior.mean)
    recon = vae.decode(z).sample
    rec = F.mse_loss(recon, pixels) + F.l1_loss(recon, pixels)
    return rec + kl_weight * posterior.kl().mean()


class VaeLoss(torch.nn.Module):
    """The autoencoder's loss as one module's forward: under DistributedDataParallel the encoder
    and decoder then run inside the wrapper, whose hooks average their gradients across processes
    (calling `.encode` on the wrapper fails; calling it on the inner VAE would skip the sync)."""

    def __init__(self, vae, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return vae_loss(self.vae, pixels, gen, self.kl_weight)
