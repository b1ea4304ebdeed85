"""The contract every backend satisfies, checked by the type checker (`make test` runs mypy) and
at load time: the sampling loop, the server and the export parity check rely on nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # types only: the registry imports this module without torch
    import torch


@runtime_checkable
class Denoiser(Protocol):
    """Predicts the noise (or velocity) of a batch of latents."""

    device: torch.device  # where the loop keeps its tensors

    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """latents (B, C, h, w), timesteps (B,), context (B, tokens, width) -> (B, C, h, w), float32."""
        ...


@runtime_checkable
class Decoder(Protocol):
    """Turns scaled-back latents into images."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, C, h, w) -> images (B, 3, H, W) in [-1, 1], float32."""
        ...


@runtime_checkable
class Backend(Denoiser, Decoder, Protocol):
    """A runtime adapted to the sampling loop: torch, ONNX Runtime or TensorRT."""

    name: str  # recorded with every image's provenance
