"""One I/O spec per exported component. ONNX export (names, dynamic axes, sample inputs), the
parity check and the TensorRT optimisation profiles (min/opt/max shapes) all read it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

BATCH = "batch"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # BATCH marks the dynamic batch axis
    kind: str = "float"  # float: the component's dtype; timestep: always float32


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch_multiplier: int = 1  # the U-Net sees 2x the image batch under classifier-free guidance

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {
            t.name: {i: BATCH for i, d in enumerate(t.shape) if d == BATCH}
            for t in (*self.inputs, *self.outputs)
        }

    def shape(self, tensor: TensorSpec, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else d for d in tensor.shape)

    def sample_inputs(self, batch: int, dtype=torch.float32, seed: int = 0) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        out = []
        for t in self.inputs:
            if t.kind == "timestep":
                out.append(torch.rand(batch, generator=gen) * 999)
            else:
                out.append(torch.randn(self.shape(t, batch), generator=gen).to(dtype))
        return tuple(out)

    def profile(self, batch_sizes: Sequence[int]) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Per input (min, opt, max) shapes covering every batch the sampling loop sends for the
        image batch sizes requested: guidance 0 or 1 sends the image batch itself, guidance above
        1 twice it (`batch_multiplier`), so the range runs from the smallest image batch to
        multiplier x the largest; the optimum is the middle size under guidance."""
        lo, hi = min(batch_sizes), max(batch_sizes) * self.batch_multiplier
        opt = sorted(batch_sizes)[len(batch_sizes) // 2] * self.batch_multiplier
        return {t.name: (self.shape(t, lo), self.shape(t, opt), self.shape(t, hi)) for t in self.inputs}


def unet_spec(latent_shape: Sequence[int], text_tokens: int, text_dim: int) -> ComponentSpec:
    c, h, w = latent_shape
    return ComponentSpec(
        "unet",
        (
            TensorSpec("sample", (BATCH, c, h, w)),
            TensorSpec("timestep", (BATCH,), kind="timestep"),
            TensorSpec("encoder_hidden_states", (BATCH, text_tokens, text_dim)),
        ),
        (TensorSpec("noise_pred", (BATCH, c, h, w)),),
        batch_multiplier=2,
    )


def vae_decoder_spec(latent_shape: Sequence[int], resolution: int) -> ComponentSpec:
    c, h, w = latent_shape
    return ComponentSpec(
        "vae_decoder",
        (TensorSpec("latent", (BATCH, c, h, w)),),
        (TensorSpec("image", (BATCH, 3, resolution, resolution)),),
    )


class UNetExport(torch.nn.Module):
    """(sample, timestep, encoder_hidden_states) -> noise prediction."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class VaeDecoderExport(torch.nn.Module):
    """latent (already divided by the scaling factor) -> image in [-1, 1]."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]
