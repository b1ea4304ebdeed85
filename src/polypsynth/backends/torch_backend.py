"""The PyTorch backend: diffusers modules, fp32/fp16/bf16, SDPA attention, channels_last, optional
torch.compile or CUDA graphs; CUDA when present, CPU otherwise."""

from __future__ import annotations

from pathlib import Path

import torch

from polypsynth.backends.cuda_graphs import CudaGraphed
from polypsynth.bundle_format import Manifest
from polypsynth.errors import SamplingError
from polypsynth.models import load_components

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        components,
        *,
        device: str | None = None,
        dtype: str = "fp32",
        channels_last: bool = False,
        compile: bool | str = False,
        cuda_graphs: bool = False,
    ):
        """`compile`: False, True (torch.compile's default mode) or a mode name; "reduce-overhead"
        records CUDA graphs itself. `cuda_graphs`: record the eager U-Net and decoder once per batch
        shape and replay them, which removes the per-kernel launch cost that dominates small batches
        (no compilation, seconds of warm-up). The modules are moved and cast in place: pass a copy
        to keep the caller's."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        if compile not in COMPILE_MODES:
            raise SamplingError(
                f"unknown compile mode {compile!r}; valid: False, True, {', '.join(m for m in COMPILE_MODES if isinstance(m, str))}"
            )
        if dtype not in DTYPES:
            raise SamplingError(f"unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SamplingError("device cuda requested, but torch sees no CUDA device")
        self.device = torch.device(device)
        if cuda_graphs and self.device.type != "cuda":
            raise SamplingError(f"cuda_graphs needs a CUDA device; the torch backend runs on {device}")
        if cuda_graphs and compile:
            raise SamplingError(
                "cuda_graphs and compile together: use compile='reduce-overhead', which records CUDA graphs itself"
            )
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        cast = {} if self.dtype == torch.float32 else {"dtype": self.dtype}  # fp32 weights stay as loaded
        self.unet = components.unet.to(self.device, **cast).eval()
        self.vae = components.vae.to(self.device, **cast).eval()
        self.unet.set_attn_processor(AttnProcessor2_0())  # scaled_dot_product_attention
        self.vae.set_attn_processor(AttnProcessor2_0())
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        self._unet = self._unet_forward
        self._decoder = self._vae_decode
        if compile:
            self._unet = torch.compile(self._unet_forward, mode=None if compile is True else compile)
        if cuda_graphs:
            self._unet, self._decoder = CudaGraphed(self._unet_forward), CudaGraphed(self._vae_decode)

    def _unet_forward(self, latents, timesteps, context):
        return self.unet(latents, timesteps, context, return_dict=False)[0]

    def _vae_decode(self, latents):
        return self.vae.decode(latents, return_dict=False)[0]

    @torch.no_grad()
    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = self._unet(
            latents.to(self.device, self.dtype),
            timesteps.to(self.device),
            context.to(self.device, self.dtype),
        )
        return out.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._decoder(latents.to(self.device, self.dtype)).float()


def from_bundle(bundle: Path, manifest: Manifest, **options) -> TorchBackend:
    """The torch backend over a bundle's source checkpoint (the registry checked it is there)."""
    return TorchBackend(load_components(str(manifest.source_checkpoint)), **options)
