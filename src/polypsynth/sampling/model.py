"""A model ready to sample: a backend plus the cached conditioning and the metadata the loop needs.

`open_model(path, backend)` accepts a bundle (manifest.json: any backend) or a checkpoint folder
(torch backend; the conditioning is computed from its text encoder once, at load)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from polypsynth.backends.protocol import Backend
from polypsynth.backends.registry import kind_of, load_backend
from polypsynth.backends.torch_backend import TorchBackend
from polypsynth.bundle_format import checkpoint_hash, is_bundle, load_manifest
from polypsynth.errors import SamplingError
from polypsynth.models import load_components
from polypsynth.models.loading import class_prompts, latent_shape, missing_files, resolution_of
from polypsynth.sampling.conditioning import Conditioning, compute_conditioning
from polypsynth.sampling.request import Settings


@dataclass(kw_only=True)
class SamplerModel:
    backend: Backend
    conditioning: Conditioning
    latent_shape: tuple[int, int, int]
    scaling_factor: float
    scheduler_config: dict
    model_hash: str
    resolution: int
    source: Path
    defaults: Settings = Settings()  # the bundle's recorded defaults, else the built-in ones

    @property
    def classes(self) -> list[str]:
        return self.conditioning.classes

    @property
    def backend_name(self) -> str:
        return self.backend.name


def open_model(path: str | Path, backend: str = "torch", **options) -> SamplerModel:

    path = Path(path)
    kind = kind_of(backend)
    if not path.exists():
        raise SamplingError(f"model not found: {path} (expected a bundle or a checkpoint folder)")
    if is_bundle(path):
        manifest = load_manifest(path)
        conditioning = Conditioning.load(path / "conditioning.safetensors")
        instance = load_backend(backend, path, manifest=manifest, **options)
        return SamplerModel(
            backend=instance,
            conditioning=conditioning,
            latent_shape=manifest.latent_shape,
            scaling_factor=manifest.scaling_factor,
            scheduler_config=manifest.scheduler_config,
            model_hash=manifest.source_hash,
            resolution=manifest.resolution,
            source=path,
            defaults=manifest.defaults,
        )

    if path.is_dir() and any(path.glob("*.onnx")):
        raise SamplingError(
            f"{path} holds ONNX graphs but no manifest.json: an incomplete or damaged bundle (the manifest "
            "is written last); export it again with `polypsynth export --checkpoint CKPT --out "
            f"{path} --overwrite`"
        )
    missing = missing_files(path) if path.is_dir() else ["(a folder)"]
    if missing:
        raise SamplingError(
            f"{path} is neither a bundle (no manifest.json) nor a checkpoint folder (missing "
            f"{', '.join(missing)})"
        )
    if kind.needs_bundle:
        raise SamplingError(
            f"backend {backend!r} needs an exported bundle; {path} is a checkpoint folder "
            f"(run `polypsynth export --checkpoint {path} --out BUNDLE`, or use --backend torch)"
        )

    components = load_components(path)
    conditioning = compute_conditioning(components, class_prompts(path))
    return model_from_components(components, conditioning, checkpoint_hash(path), path, **options)


def model_from_components(components, conditioning, model_hash: str, source: Path, **options) -> SamplerModel:

    return SamplerModel(
        backend=TorchBackend(components, **options),
        conditioning=conditioning,
        latent_shape=latent_shape(components),
        scaling_factor=float(components.vae.config.scaling_factor),
        scheduler_config=dict(components.scheduler.config),
        model_hash=model_hash,
        resolution=resolution_of(components),
        source=Path(source),
    )
