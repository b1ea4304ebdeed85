"""The ONNX Runtime backend over a bundle's unet.onnx and vae_decoder.onnx.

Providers are tried in the order requested (cpu, cuda, tensorrt); on CUDA, inputs and outputs are
bound to device memory with IO binding, so tensors never travel through the host between steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polypsynth.sampling.schedulers import SamplingError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_NP = {"fp32": np.float32, "fp16": np.float16}
_TORCH = {"fp32": torch.float32, "fp16": torch.float16}


def resolve_providers(requested) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    names = []
    for item in requested:
        name = PROVIDERS.get(item, item)
        if name not in available:
            raise SamplingError(
                f"onnxruntime provider {item!r} is not available here; available providers: {', '.join(available)}"
            )
        names.append(name)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")  # fallback for ops a GPU provider lacks
    return names


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, bundle: Path, manifest: dict, providers=("cpu",), threads: int | None = None):
        import onnxruntime as ort

        self.providers = resolve_providers(providers)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.np_dtype = _NP[manifest["dtype"]]
        self.torch_dtype = _TORCH[manifest["dtype"]]
        self.on_cuda = self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        self.device = torch.device("cuda" if self.on_cuda else "cpu")
        self.unet = ort.InferenceSession(str(bundle / "unet.onnx"), options, providers=self.providers)
        self.decoder = ort.InferenceSession(
            str(bundle / "vae_decoder.onnx"), options, providers=self.providers
        )

    def _run(self, session, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.on_cuda:
            arrays = {
                k: v.detach().cpu().numpy().astype(self.np_dtype if k != "timestep" else np.float32)
                for k, v in feeds.items()
            }
            return torch.from_numpy(session.run(None, arrays)[0]).float()
        binding = session.io_binding()
        keep = []
        for name, tensor in feeds.items():
            dtype = torch.float32 if name == "timestep" else self.torch_dtype
            t = tensor.to(self.device, dtype).contiguous()
            keep.append(t)
            binding.bind_input(
                name,
                "cuda",
                0,
                np.float32 if name == "timestep" else self.np_dtype,
                tuple(t.shape),
                t.data_ptr(),
            )
        out_meta = session.get_outputs()[0]
        binding.bind_output(out_meta.name, "cuda", 0)
        session.run_with_iobinding(binding)
        value = binding.get_outputs()[0]
        return (
            torch.from_dlpack(value.to_dlpack()).float()
            if hasattr(value, "to_dlpack")
            else torch.from_numpy(value.numpy()).to(self.device).float()
        )

    def denoise(self, latents, timesteps, context):
        return self._run(
            self.unet, {"sample": latents, "timestep": timesteps, "encoder_hidden_states": context}
        )

    def decode(self, latents):
        return self._run(self.decoder, {"latent": latents})
