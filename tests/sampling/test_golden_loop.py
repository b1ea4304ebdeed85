"""A golden test of the sampling loop: for every scheduler, polypsynth's loop and diffusers' own
StableDiffusionPipeline (same components, prompt embeddings and initial noise, fp32) give the same
images. Every other sampling test compares backends or batchings with each other, so a bug in the
loop that they all share would pass them; this one compares with an independent implementation."""

import numpy as np
import pytest
import torch
from tiny_model import SMALL

from polypsynth.sampling.conditioning import compute_conditioning
from polypsynth.sampling.model import model_from_components
from polypsynth.sampling.schedulers import SCHEDULERS, make_scheduler
from polypsynth.sampling.seeds import initial_noise

SEEDS = [5, 6]


@pytest.fixture(scope="module")
def tiny():
    from polypsynth.models import build_tiny

    components = build_tiny(SMALL, resolution=32, seed=7)
    return components, compute_conditioning(components)


def _pipeline_images(components, conditioning, scheduler, latent_shape, steps, guidance):
    pipe = components.pipeline(make_scheduler(scheduler, dict(components.scheduler.config)))
    pipe.set_progress_bar_config(disable=True)
    n = len(SEEDS)
    with torch.no_grad():
        images = pipe(
            prompt_embeds=conditioning.of("AD").expand(n, -1, -1),
            negative_prompt_embeds=conditioning.unconditional.expand(n, -1, -1),
            latents=initial_noise(SEEDS, latent_shape),
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="pt",
        ).images
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_loop_equals_diffusers_pipeline(tiny, tmp_path, scheduler):
    from polypsynth.sampling.loop import sample_batch
    from polypsynth.sampling.request import Settings

    components, conditioning = tiny
    model = model_from_components(components, conditioning, "golden", tmp_path, device="cpu", dtype="fp32")
    ours = sample_batch(model, SEEDS, ["AD"] * len(SEEDS), Settings(6, 3.0, scheduler))
    theirs = _pipeline_images(components, conditioning, scheduler, model.latent_shape, 6, 3.0)
    assert ours.shape == theirs.shape == (2, 32, 32, 3)
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1, f"{scheduler}: max |diff| {diff.max()} levels"
    assert ours.std() > 1  # not a constant image that would agree trivially


def test_every_backend_satisfies_the_backend_protocol(tiny_bundle, tiny_checkpoint):
    from polypsynth.backends import Backend, Decoder, Denoiser
    from polypsynth.sampling.model import open_model

    for model in (open_model(tiny_bundle, "onnxruntime"), open_model(tiny_checkpoint, "torch")):
        assert isinstance(model.backend, Backend) and model.backend_name in ("onnxruntime", "torch")

    class DenoiseOnly:
        name, device = "x", None

        def denoise(self, latents, timesteps, context):
            return latents

    assert isinstance(DenoiseOnly(), Denoiser) and not isinstance(DenoiseOnly(), Decoder)
    assert not isinstance(DenoiseOnly(), Backend)  # no decode: load_backend refuses it
