"""The PyTorch backend: diffusers modules, fp32/fp16/bf16, SDPA attention, channels_last and
optional torch.compile; CUDA when present, CPU otherwise."""

from __future__ import annotations

import torch

from polypsynth.sampling.schedulers import SamplingError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        components,
        device: str | None = None,
        dtype: str = "fp32",
        channels_last: bool = False,
        compile: bool | str = False,
    ):
        """`compile`: False, True (torch.compile's default mode) or a mode name; "reduce-overhead"
        records CUDA graphs, which pays off where per-kernel launch overhead is a share of a step."""
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
        self.dtype = DTYPES[dtype]
        cast = {} if self.dtype == torch.float32 else {"dtype": self.dtype}  # fp32 weights stay as loaded
        self.unet = components.unet.to(self.device, **cast).eval()
        self.vae = components.vae.to(self.device, **cast).eval()
        self.unet.set_attn_processor(AttnProcessor2_0())  # scaled_dot_product_attention
        self.vae.set_attn_processor(AttnProcessor2_0())
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        mode = None if compile is True else compile
        self._unet = torch.compile(self.unet, mode=mode) if compile else self.unet
        self._decoder = self.vae.decode

    @torch.no_grad()
    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = self._unet(
            latents.to(self.device, self.dtype),
            timesteps.to(self.device),
            context.to(self.device, self.dtype),
        )
        return out.sample.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._decoder(latents.to(self.device, self.dtype)).sample.float()
