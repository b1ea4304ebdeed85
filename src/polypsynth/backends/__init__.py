"""Backends adapt a runtime to the Denoiser/Decoder contract:

    denoise(latents, timesteps, context) -> noise prediction   (torch tensors on backend.device)
    decode(latents) -> images in [-1, 1]

and nothing else; the sampling loop never knows which one runs."""

from __future__ import annotations

from pathlib import Path

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def load_backend(name: str, path, manifest=None, **options):
    from polypsynth.sampling.schedulers import SamplingError

    if name == "torch":
        from polypsynth.backends.torch_backend import TorchBackend
        from polypsynth.models import load_components

        source = manifest.get("source_checkpoint") if manifest else None
        if not source or not Path(source).is_dir():
            raise SamplingError(
                f"the torch backend needs the bundle's source checkpoint, which is not found: {source}; "
                "use --backend onnxruntime for a bundle"
            )
        return TorchBackend(load_components(source), **options)
    if name == "onnxruntime":
        from polypsynth.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, manifest, **options)
    if name == "tensorrt":
        from polypsynth.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, manifest, **options)
    raise SamplingError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
