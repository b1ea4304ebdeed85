"""The denoising loop, written once for every backend (k-diffusion style: a plain function over a
denoiser). A backend only provides `denoise(latents, timesteps, context)` and `decode(latents)`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from polypsynth.data.dataset import to_uint8
from polypsynth.errors import SamplingError
from polypsynth.sampling.request import Params, Settings
from polypsynth.sampling.schedulers import make_scheduler
from polypsynth.sampling.seeds import initial_noise


@torch.no_grad()
def denoise_latents(
    backend,
    context: torch.Tensor,
    unconditional: torch.Tensor,
    seeds: Sequence[int],
    latent_shape: Sequence[int],
    *,
    settings: Settings,
    scheduler_config: dict,
) -> torch.Tensor:
    """Final latents of one batch: one image per seed, `context` (N, tokens, dim) one embedding per
    image (a batch may mix classes), `unconditional` (tokens, dim)."""
    scheduler = make_scheduler(settings.scheduler, scheduler_config)
    scheduler.set_timesteps(settings.steps)
    guidance = settings.guidance
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
    model, params: Params, batch_size: int = 8, start: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """(position of the first image, uint8 (n, H, W, 3)) per batch of the request's images of one
    class, from position `start` on (image at position p seeded `params.draw.seed_of(p)`). One
    batch at a time: what a caller keeps is its own choice, so a folder of any count needs the
    memory of one batch.

    `model` is a SamplerModel (backend + conditioning + metadata)."""
    params.validate(model.classes)
    if batch_size < 1:
        raise SamplingError(f"batch size must be >= 1, got {batch_size}")
    for first in range(start, params.count, batch_size):
        seeds = [params.draw.seed_of(p) for p in range(first, min(first + batch_size, params.count))]
        yield first, sample_batch(model, seeds, [params.class_name] * len(seeds), params.settings)


def sample_images(model, params: Params, batch_size: int = 8, start: int = 0) -> np.ndarray:
    """All images from `start` on, in memory, as uint8 (N, H, W, 3): for a few (tests, previews);
    folders of any size stream through `image_batches`."""
    return np.concatenate([images for _, images in image_batches(model, params, batch_size, start)])


def sample_batch(model, seeds: Sequence[int], classes: Sequence[str], settings: Settings) -> np.ndarray:
    """Images for explicit seeds and per-image classes, drawn with `settings` (the server packs
    images of several requests that share their settings into one batch)."""
    context = torch.stack([model.conditioning.of(c) for c in classes])
    latents = denoise_latents(
        model.backend,
        context,
        model.conditioning.unconditional,
        seeds,
        model.latent_shape,
        settings=settings,
        scheduler_config=model.scheduler_config,
    )
    decoded = model.backend.decode(latents / model.scaling_factor)
    require_finite(decoded, model.backend, "the decoded images")
    return to_uint8(decoded)
