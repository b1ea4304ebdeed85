"""`export_bundle`: a checkpoint exported as ONNX graphs (and TensorRT engines) with its
conditioning and a manifest; the format and its validation on load live in bundle_format.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from polypsynth import __version__
from polypsynth.atomic import atomic_dir, prepare_target
from polypsynth.backends.onnxruntime_backend import import_onnxruntime
from polypsynth.bundle_format import Manifest, checkpoint_hash, file_sha256, write_manifest
from polypsynth.export.onnx import ExportError, check_opset, export_onnx, parity, trace_device
from polypsynth.export.ort_optimize import NEEDS_PROVIDER, OPTIMIZE, optimize_for_cuda
from polypsynth.export.spec import UNetExport, VaeDecoderExport, unet_spec, vae_decoder_spec
from polypsynth.export.tensorrt import build_engines
from polypsynth.models import load_components
from polypsynth.models.loading import class_prompts, resolution_of
from polypsynth.models.loading import latent_shape as latent_shape_of
from polypsynth.sampling.conditioning import compute_conditioning
from polypsynth.sampling.request import Settings

TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}  # max relative error of ONNX Runtime against PyTorch fp32
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def _versions() -> dict[str, str]:
    import diffusers
    import onnx

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
    *,
    dtype: str = "fp32",
    opset: int = 17,
    tensorrt: bool = False,
    batch_sizes: Sequence[int] = (1, 8, 32),
    exporter: str = "torchscript",
    overwrite: bool = False,
    tolerance: float | None = None,
    optimize: str | None = None,
    defaults: Settings | None = None,
) -> Manifest:
    """Export a checkpoint folder into a bundle (atomically); returns the manifest. `optimize`:
    "cuda" rewrites both graphs with ONNX Runtime's transformer optimizer (ort_optimize.py; the
    bundle then needs the CUDA provider), "none" keeps the portable graphs; by default "cuda" for
    an fp16 export where onnxruntime has the CUDA provider, else "none"."""

    if dtype not in _DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; expected fp32 or fp16")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ExportError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    optimize = _check_optimize(optimize, dtype, tensorrt)
    check_opset(opset)
    prepare_target(out, overwrite, "bundle folder")
    checkpoint = Path(checkpoint).resolve()
    components = load_components(checkpoint)
    conditioning = compute_conditioning(components, class_prompts(checkpoint))
    vae, unet = components.vae.eval(), components.unet.eval()
    resolution = resolution_of(components)
    latent_shape = latent_shape_of(components)
    tokens, dim = conditioning.embeddings.shape[1:]
    specs = {
        "unet": (unet_spec(latent_shape, tokens, dim), UNetExport(unet)),
        "vae_decoder": (vae_decoder_spec(latent_shape, resolution), VaeDecoderExport(vae)),
    }
    device = trace_device(_DTYPES[dtype])
    if optimize == "cuda":  # fused on the fp32 graph, then converted (ort_optimize.py)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    graphs = _Graphs(dtype, opset, exporter, optimize, device, tolerance)
    with atomic_dir(out, overwrite=overwrite, what="bundle folder") as tmp:
        figures, fused = graphs.write(tmp, specs)
        conditioning.save(tmp / "conditioning.safetensors")
        engines = build_engines(tmp, {n: s for n, (s, _) in specs.items()}, batch_sizes) if tensorrt else None
        manifest = Manifest(
            source_checkpoint=str(checkpoint),
            source_hash=checkpoint_hash(checkpoint),
            resolution=resolution,
            latent_shape=latent_shape,
            scaling_factor=float(vae.config.scaling_factor),
            scheduler_config={k: v for k, v in components.scheduler.config.items() if not k.startswith("_")},
            classes=conditioning.prompts,
            defaults=defaults or Settings(),  # what a request leaves out (GetModel)
            text_shape=(int(tokens), int(dim)),
            dtype=dtype,
            opset=opset,
            exporter=exporter,
            traced_on=device.type,
            fp16_by=_fp16_by(dtype, optimize, device),
            optimized_for=None if optimize == "none" else optimize,
            needs_provider=NEEDS_PROVIDER if optimize == "cuda" else None,
            fused_nodes=fused or None,
            versions=_versions(),
            parity=figures,
            engines=engines,
            components={n: spec for n, (spec, _) in specs.items()},
            files={p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()},
        )
        write_manifest(tmp, manifest)
    return manifest


@dataclass(frozen=True)
class _Graphs:
    """How the ONNX graphs of one bundle are written: traced, optionally fused for CUDA, and each
    checked against PyTorch (a graph over the tolerance stops the export)."""

    dtype: str
    opset: int
    exporter: str
    optimize: str
    device: torch.device
    tolerance: float | None

    def write(self, folder: Path, specs: dict) -> tuple[dict, dict]:
        """Every graph of `specs` (name -> (spec, module)) into `folder`; their parity figures and
        the nodes the CUDA optimiser fused (empty without it)."""
        limit = self.tolerance if self.tolerance is not None else TOLERANCE[self.dtype]
        cuda = self.optimize == "cuda"
        figures, fused = {}, {}
        for name, (spec, module) in specs.items():
            traced = torch.float32 if cuda else _DTYPES[self.dtype]
            path = export_onnx(
                module,
                spec,
                folder / f"{name}.onnx",
                opset=self.opset,
                dtype=traced,
                exporter=self.exporter,
                device=self.device,
            )
            if cuda:
                keep = [t.name for t in spec.inputs if t.kind == "timestep"]
                fused[name] = optimize_for_cuda(path, name, keep, fp16=self.dtype == "fp16")
            provider = NEEDS_PROVIDER if cuda else "CPUExecutionProvider"
            figures[name] = parity(module, spec, path, dtype=_DTYPES[self.dtype], provider=provider)
            if figures[name]["max_rel"] > limit:
                raise ExportError(
                    f"{name}: ONNX Runtime differs from PyTorch by max_abs={figures[name]['max_abs']:.3g}, "
                    f"max_rel={figures[name]['max_rel']:.3g} (tolerance {limit:g} for {self.dtype}); bundle not written"
                )
        return figures, fused


def _check_optimize(optimize: str | None, dtype: str, tensorrt: bool) -> str:
    """The optimisation to apply: as asked (checked), or the default for this machine."""

    available = import_onnxruntime().get_available_providers()
    if optimize is None:
        return "cuda" if dtype == "fp16" and NEEDS_PROVIDER in available and not tensorrt else "none"
    if optimize not in OPTIMIZE:
        raise ExportError(f"unknown optimisation {optimize!r}; expected one of {', '.join(OPTIMIZE)}")
    if optimize == "cuda" and tensorrt:
        raise ExportError(
            "--optimize cuda writes graphs with ONNX Runtime's own fused operators, which TensorRT cannot "
            "parse: build TensorRT engines from a portable bundle (--optimize none)"
        )
    if optimize == "cuda" and NEEDS_PROVIDER not in available:
        raise ExportError(
            f"--optimize cuda needs onnxruntime's {NEEDS_PROVIDER} (its fused kernels exist only there, and "
            f"the export checks the graphs on it); available here: {', '.join(available)}. Install "
            "onnxruntime-gpu on a GPU machine, or export with --optimize none for a portable bundle"
        )
    return optimize


def _fp16_by(dtype: str, optimize: str, device: torch.device) -> str | None:
    if dtype == "fp32":
        return None
    if optimize == "cuda":
        return "optimizer"  # fused in fp32, then converted
    return "trace" if device.type == "cuda" else "conversion"
