"""Backends adapt a runtime to the Denoiser/Decoder contract (`protocol.Backend`):

    denoise(latents, timesteps, context) -> noise prediction   (torch tensors on backend.device)
    decode(latents) -> images in [-1, 1]

and nothing else; the sampling loop never knows which one runs. `registry` names them all and
loads one; importing this package loads no runtime (and not torch)."""

from __future__ import annotations

from polypsynth.backends.protocol import Backend, Decoder, Denoiser
from polypsynth.backends.registry import BACKENDS, REGISTRY, backend_options, kind_of, load_backend

__all__ = [
    "BACKENDS",
    "REGISTRY",
    "Backend",
    "Decoder",
    "Denoiser",
    "backend_options",
    "kind_of",
    "load_backend",
]
