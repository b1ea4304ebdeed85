"""Backends adapt a runtime to the Denoiser/Decoder contract (`protocol.Backend`):

    denoise(latents, timesteps, context) -> noise prediction   (torch tensors on backend.device)
    decode(latents) -> images in [-1, 1]

and nothing else; the sampling loop never knows which one runs."""

from __future__ import annotations

from pathlib import Path

from polypsynth.backends.onnxruntime_backend import OnnxRuntimeBackend
from polypsynth.backends.protocol import Backend, Decoder, Denoiser
from polypsynth.backends.tensorrt_backend import TensorRTBackend
from polypsynth.backends.torch_backend import TorchBackend
from polypsynth.bundle_format import Manifest
from polypsynth.errors import SamplingError
from polypsynth.models import load_components

__all__ = ["BACKENDS", "Backend", "Decoder", "Denoiser", "backend_options", "load_backend"]

BACKENDS = ("torch", "onnxruntime", "tensorrt")

# Which options each backend takes (the CLI's flags, the server's backend_options).
BACKEND_OPTIONS = {
    "torch": ("device", "dtype", "channels_last", "compile", "cuda_graphs"),
    "onnxruntime": ("providers", "cuda_graphs"),
    "tensorrt": ("cuda_graphs",),
}


def backend_options(backend: str, **given) -> dict:
    """The options for `backend` among `given`, leaving out those not set (None or False); an
    option set for a backend that does not take it is an error naming both, never ignored."""
    if backend not in BACKEND_OPTIONS:
        raise SamplingError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    chosen = {k: v for k, v in given.items() if v is not None and v is not False and v != ()}
    wrong = [k for k in chosen if k not in BACKEND_OPTIONS[backend]]
    if wrong:
        flags = ", ".join(_flag(k) for k in wrong)
        takes = ", ".join(_flag(k) for k in BACKEND_OPTIONS[backend])
        verb = "does" if len(wrong) == 1 else "do"
        raise SamplingError(f"{flags} {verb} not apply to the {backend} backend (it takes {takes})")
    return chosen


def _flag(option: str) -> str:
    return "--provider" if option == "providers" else "--" + option.replace("_", "-")


def load_backend(name: str, path, manifest: Manifest, **options) -> Backend:
    backend = _load(name, path, manifest, **options)
    if not isinstance(backend, Backend):  # a runtime check of the Protocol's members
        raise SamplingError(f"the {name} backend does not satisfy the Backend protocol")
    return backend


def _load(name: str, path, manifest: Manifest, **options) -> Backend:
    if name == "torch":
        source = manifest.source_checkpoint
        if not source or not Path(source).is_dir():
            raise SamplingError(
                f"the torch backend needs the bundle's source checkpoint, which is not found: {source}; "
                "use --backend onnxruntime for a bundle"
            )
        return TorchBackend(load_components(source), **options)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(path, manifest, **options)
    if name == "tensorrt":
        return TensorRTBackend(path, manifest, **options)
    raise SamplingError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
