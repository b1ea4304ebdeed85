"""The denoising loop, written once for every backend (k-diffusion style: a plain function over a
denoiser). A backend only provides `denoise(latents, timesteps, context)` and `decode(latents)`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from polypsynth.errors import SamplingError
from polypsynth.sampling.request import SamplingParams
from polypsynth.sampling.schedulers import make_scheduler
from polypsynth.sampling.seeds import image_seeds, initial_noise


def to_uint8_images(decoded: torch.Tensor) -> np.ndarray:
    """Decoder output in [-1, 1] (N, 3, H, W) -> uint8 (N, H, W, 3)."""
    x = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def denoise_latents(
    backend,
    context: torch.Tensor,
    unconditional: torch.Tensor,
    seeds: Sequence[int],
    latent_shape: Sequence[int],
    scheduler_name: str,
    scheduler_config: dict,
    steps: int,
    guidance: float,
) -> torch.Tensor:
    """Final latents of one batch: one image per seed, `context` (N, tokens, dim) one embedding per
    image (a batch may mix classes), `unconditional` (tokens, dim)."""
    scheduler = make_scheduler(scheduler_name, scheduler_config)
    scheduler.set_timesteps(steps)
    device = backend.device
    latents = initial_noise(seeds, latent_shape).to(device) * scheduler.init_noise_sigma
    n = len(seeds)
    cond = context.to(device)
    uncond = unconditional.to(device).expand(n, *unconditional.shape)
    both = torch.cat([uncond, cond])
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t)
        if guidance == 1.0:  # conditional only
            pred = backend.denoise(x, _timesteps(t, n, device), cond)
        elif guidance == 0.0:  # unconditional only
            pred = backend.denoise(x, _timesteps(t, n, device), uncond)
        else:
            out = backend.denoise(torch.cat([x, x]), _timesteps(t, 2 * n, device), both)
            pred_uncond, pred_cond = out.float().chunk(2)
            pred = pred_uncond + guidance * (pred_cond - pred_uncond)
        latents = scheduler.step(pred.float(), t, latents).prev_sample
    require_finite(latents, backend, "the final latents")
    return latents


def require_finite(x: torch.Tensor, backend, what: str) -> None:
    """NaN survives `clamp` and becomes black pixels: a batch with non-finite values fails instead
    (one device sync per batch, not per step: NaN and inf propagate to the end of the loop)."""
    if not bool(torch.isfinite(x).all()):
        dtype = getattr(backend, "dtype_name", None)
        hint = f" in {dtype}" if dtype else ""
        raise SamplingError(
            f"the {backend.name} backend{hint} produced non-finite values (NaN or inf) in {what}; "
            "no image was kept (fp16 overflow is the usual cause: try bf16 or fp32)"
        )


def _timesteps(t: torch.Tensor, n: int, device) -> torch.Tensor:
    return torch.full((n,), float(t), dtype=torch.float32, device=device)


def image_batches(
    model, params: SamplingParams, batch_size: int = 8, start: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the first image, uint8 (n, H, W, 3)) per batch of `params.count` images of one
    class, image i seeded params.seed + i, from image `start` on. One batch at a time: what a
    caller keeps is its own choice, so a folder of any count needs the memory of one batch.

    `model` is a SamplerModel (backend + conditioning + metadata)."""
    params.validate(model.classes)
    if batch_size < 1:
        raise SamplingError(f"batch size must be >= 1, got {batch_size}")
    for first in range(start, params.count, batch_size):
        seeds = image_seeds(params.seed, min(batch_size, params.count - first), first)
        yield (
            first,
            sample_batch(
                model,
                seeds,
                [params.class_name] * len(seeds),
                params.steps,
                params.guidance,
                params.scheduler,
            ),
        )


def sample_images(model, params: SamplingParams, batch_size: int = 8, start: int = 0) -> np.ndarray:
    """All images from `start` on, in memory, as uint8 (N, H, W, 3): for a few (tests, previews);
    folders of any size stream through `image_batches`."""
    return np.concatenate([images for _, images in image_batches(model, params, batch_size, start)])


def sample_batch(
    model, seeds: Sequence[int], classes: Sequence[str], steps: int, guidance: float, scheduler: str
) -> np.ndarray:
    """Images for explicit seeds and per-image classes (the server packs images of several
    requests that share steps, guidance and scheduler into one batch)."""
    context = torch.stack([model.conditioning.of(c) for c in classes])
    latents = denoise_latents(
        model.backend,
        context,
        model.conditioning.unconditional,
        seeds,
        model.latent_shape,
        scheduler,
        model.scheduler_config,
        steps,
        guidance,
    )
    decoded = model.backend.decode(latents / model.scaling_factor)
    require_finite(decoded, model.backend, "the decoded images")
    return to_uint8_images(decoded)
