"""What is exported: the modules behind each component's spec (bundle_format.ComponentSpec, which
the manifest records and the runtime backends read), and random inputs of a spec's shapes."""

from __future__ import annotations

import torch

from polypsynth.bundle_format import ComponentSpec, unet_spec, vae_decoder_spec

__all__ = [
    "ComponentSpec",
    "UNetExport",
    "VaeDecoderExport",
    "sample_inputs",
    "unet_spec",
    "vae_decoder_spec",
]


def sample_inputs(
    spec: ComponentSpec, batch: int, dtype=torch.float32, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random inputs of the spec's shapes (timesteps in 0 .. 999, float32): for tracing and parity."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in spec.inputs:
        if t.kind == "timestep":
            out.append(torch.rand(batch, generator=gen) * 999)
        else:
            out.append(torch.randn(spec.shape(t, batch), generator=gen).to(dtype))
    return tuple(out)


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
