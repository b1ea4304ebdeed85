"""A low-variance diffusion loss for comparing checkpoints: fixed images, fixed noise, and a fixed
grid of timesteps instead of random ones (the per-step training loss swings with the timesteps
drawn)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from polypsynth.data.dataset import RecordDataset
from polypsynth.data.prompts import prompt_for
from polypsynth.data.records import Record
from polypsynth.train.cache import encode_prompts


def spread(records: Sequence[Record], n: int) -> list[Record]:
    """Up to n records evenly spread over the list (deterministic)."""
    if len(records) <= n:
        return list(records)
    step = len(records) / n
    return [records[int(i * step)] for i in range(n)]


@torch.no_grad()
def validation_loss(
    components,
    records: Sequence[Record],
    resolution: int,
    *,
    prompts=None,
    seed: int = 0,
    timesteps: int = 8,
    max_images: int = 32,
    device="cpu",
) -> float:
    chosen = spread(records, max_images)
    dataset = RecordDataset(chosen, resolution, prompts=prompts)
    pixels = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))]).to(device)
    texts = [prompt_for(r, prompts) for r in chosen]
    embeddings = encode_prompts(components, texts, device)
    context = torch.stack([embeddings[t] for t in texts]).to(device)
    vae, unet, scheduler = components.vae, components.unet, components.scheduler
    was_training = unet.training
    unet.eval()
    latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mean.float() * vae.config.scaling_factor
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    grid = torch.linspace(0, scheduler.config.num_train_timesteps - 1, timesteps).round().long()
    for t in grid:
        noise = torch.randn(latents.shape, generator=gen).to(device)
        ts = torch.full((len(latents),), int(t), device=device, dtype=torch.long)
        noisy = scheduler.add_noise(latents, noise, ts)
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, ts)
        else:
            target = noise
        pred = unet(noisy.to(unet.dtype), ts, context.to(unet.dtype)).sample.float()
        total += float(F.mse_loss(pred, target))
    unet.train(was_training)
    return total / len(grid)
