"""`export_bundle`: a checkpoint exported as ONNX graphs (and TensorRT engines) with its
conditioning and a manifest; the format and its validation on load live in bundle_format.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from polypsynth.atomic import atomic_dir
from polypsynth.bundle_format import MANIFEST_VERSION, checkpoint_hash, file_sha256, load_manifest  # noqa: F401  (re-exported)
from polypsynth.export.onnx import ExportError, export_onnx, parity, trace_device
from polypsynth.export.spec import UNetExport, VaeDecoderExport, unet_spec, vae_decoder_spec

TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}  # max relative error of ONNX Runtime against PyTorch fp32
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def _versions() -> dict[str, str]:
    import diffusers
    import onnx

    from polypsynth import __version__
    from polypsynth.backends.onnxruntime_backend import import_onnxruntime

    onnxruntime = import_onnxruntime()

    return {
        "polypsynth": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    dtype: str = "fp32",
    opset: int = 17,
    tensorrt: bool = False,
    batch_sizes: Sequence[int] = (1, 8, 32),
    exporter: str = "torchscript",
    overwrite: bool = False,
    tolerance: float | None = None,
) -> dict:
    """Export a checkpoint folder into a bundle (atomically); returns the manifest."""
    from polypsynth.models import load_components
    from polypsynth.models.loading import resolution_of
    from polypsynth.sampling.conditioning import compute_conditioning

    if dtype not in _DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; expected fp32 or fp16")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ExportError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    checkpoint = Path(checkpoint).resolve()
    components = load_components(checkpoint)
    meta_file = checkpoint / "polypsynth.json"
    prompts = json.loads(meta_file.read_text()).get("class_prompts") if meta_file.is_file() else None
    conditioning = compute_conditioning(components, prompts)
    vae, unet = components.vae.eval(), components.unet.eval()
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = resolution_of(components)
    latent_shape = [int(vae.config.latent_channels), resolution // down, resolution // down]
    tokens, dim = conditioning.embeddings.shape[1:]
    specs = {
        "unet": (unet_spec(latent_shape, tokens, dim), UNetExport(unet)),
        "vae_decoder": (vae_decoder_spec(latent_shape, resolution), VaeDecoderExport(vae)),
    }
    limit = tolerance if tolerance is not None else TOLERANCE[dtype]
    device = trace_device(_DTYPES[dtype])
    with atomic_dir(out, overwrite=overwrite, what="bundle folder") as tmp:
        figures = {}
        for name, (spec, module) in specs.items():
            path = export_onnx(module, spec, tmp / f"{name}.onnx", opset, _DTYPES[dtype], exporter, device)
            figures[name] = parity(module, spec, path, _DTYPES[dtype])
            if figures[name]["max_rel"] > limit:
                raise ExportError(
                    f"{name}: ONNX Runtime differs from PyTorch by max_abs={figures[name]['max_abs']:.3g}, "
                    f"max_rel={figures[name]['max_rel']:.3g} (tolerance {limit:g} for {dtype}); bundle not written"
                )
        conditioning.save(tmp / "conditioning.safetensors")
        manifest = {
            "format_version": MANIFEST_VERSION,
            "source_checkpoint": str(checkpoint),
            "source_hash": checkpoint_hash(checkpoint),
            "resolution": resolution,
            "latent_shape": latent_shape,
            "channels": 3,
            "scaling_factor": float(vae.config.scaling_factor),
            "scheduler_config": {
                k: v for k, v in components.scheduler.config.items() if not k.startswith("_")
            },
            "classes": conditioning.prompts,
            "text_shape": [int(tokens), int(dim)],
            "dtype": dtype,
            "opset": opset,
            "exporter": exporter,
            # fp16 graphs are traced in fp16 on CUDA, or traced in fp32 on a CPU and converted.
            "traced_on": device.type,
            "fp16_by": None if dtype == "fp32" else ("trace" if device.type == "cuda" else "conversion"),
            "versions": _versions(),
            "parity": figures,
            "engines": None,
        }
        if tensorrt:
            from polypsynth.export.tensorrt import build_engines

            manifest["engines"] = build_engines(tmp, {n: s for n, (s, _) in specs.items()}, batch_sizes)
        manifest["files"] = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
