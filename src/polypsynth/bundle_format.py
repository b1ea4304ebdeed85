"""The bundle format, shared by the export that writes bundles and the sampling that reads them
(neither imports the other): the file and folder hashes that name models, the manifest's version,
and its validation on load. A bundle is a checkpoint exported for fast sampling:

BUNDLE/manifest.json            format version, source checkpoint and hash, resolution, latent
                                shape, scaling factor, scheduler config, classes and prompts,
                                dtype, opset, library versions, parity figures, file hashes
BUNDLE/unet.onnx, vae_decoder.onnx
BUNDLE/conditioning.safetensors class and unconditional text embeddings
BUNDLE/*.plan                   TensorRT engines (with --tensorrt), timing.cache
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from polypsynth.errors import SamplingError

MANIFEST_VERSION = 1
HASHED_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_hash(folder: Path) -> str:
    """Hash of a model folder's files (weights, configs, tokenizer): names the model in provenance."""
    folder = Path(folder)
    h = hashlib.sha256()
    for part in HASHED_PARTS:
        target = folder / part
        files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
        for f in files:
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(file_sha256(f).encode())
    return h.hexdigest()


def is_bundle(path: Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


REQUIRED = (
    "source_hash",
    "resolution",
    "latent_shape",
    "scaling_factor",
    "scheduler_config",
    "classes",
    "dtype",
    "files",
)


# --- each component's inputs and outputs: export, parity, engine profiles and the runtime backends --

BATCH = "batch"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # BATCH marks the dynamic batch axis
    kind: str = "float"  # float: the component's dtype; timestep: always float32

    def dtype(self, bundle_dtype: str) -> str:
        """fp32 or fp16: the timestep is always fp32, every other tensor the bundle's dtype."""
        return "fp32" if self.kind == "timestep" else bundle_dtype

    def to_dict(self, bundle_dtype: str) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "kind": self.kind,
            "dtype": self.dtype(bundle_dtype),
        }

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        return cls(data["name"], tuple(data["shape"]), data.get("kind", "float"))


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

    def to_dict(self, bundle_dtype: str) -> dict:
        return {
            "inputs": [t.to_dict(bundle_dtype) for t in self.inputs],
            "outputs": [t.to_dict(bundle_dtype) for t in self.outputs],
            "batch_multiplier": self.batch_multiplier,
        }

    @classmethod
    def from_dict(cls, name: str, data: dict) -> ComponentSpec:
        return cls(
            name,
            tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            data.get("batch_multiplier", 1),
        )

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {
            t.name: {i: BATCH for i, d in enumerate(t.shape) if d == BATCH}
            for t in (*self.inputs, *self.outputs)
        }

    def shape(self, tensor: TensorSpec, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else d for d in tensor.shape)

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


@dataclass(frozen=True)
class Settings:
    """How to draw: denoising steps, classifier-free guidance scale and scheduler. A bundle records
    its model's (Manifest.defaults: what a request leaves out); a bundle written before they were
    recorded has these. The guidance default is moderate (3.0): higher scales show the class more
    strongly and trade away variety. Their ranges are the request's to check
    (sampling.request.Params.validate)."""

    steps: int = 25
    guidance: float = 3.0
    scheduler: str = "dpm++"

    @classmethod
    def from_dict(cls, given, where: str = "manifest.json") -> Settings:
        """Recorded settings, each of its type; a key left out takes the default."""
        if not isinstance(given, dict):
            raise SamplingError(f"{where}: defaults must be an object, got {given!r}")
        kinds: dict[str, tuple[type | tuple[type, ...], str]] = {
            "steps": (int, "a whole number"),
            "guidance": ((int, float), "a number"),
            "scheduler": (str, "a name"),
        }
        for key, (kind, what) in kinds.items():
            value = given.get(key)
            if key in given and (not isinstance(value, kind) or isinstance(value, bool)):
                raise SamplingError(f"{where}: defaults.{key} must be {what}, got {value!r}")
        return cls(**{k: given[k] for k in kinds if k in given})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Manifest:
    """BUNDLE/manifest.json, typed. This module alone reads and writes the file; every other part
    sees these fields. The optional ones are absent from bundles written before they existed."""

    source_hash: str
    resolution: int
    latent_shape: tuple[int, int, int]
    scaling_factor: float
    scheduler_config: dict[str, Any]
    classes: dict[str, str]  # class -> prompt
    dtype: str  # fp32 | fp16
    files: dict[str, str]  # file name -> sha256
    format_version: int = MANIFEST_VERSION
    source_checkpoint: str | None = None
    defaults: Settings = field(default_factory=lambda: Settings())  # where a request gives none
    text_shape: tuple[int, int] | None = None
    opset: int | None = None
    exporter: str | None = None
    traced_on: str | None = None  # fp16 graphs are traced in fp16 on CUDA, or in fp32 on a CPU and converted
    fp16_by: str | None = None  # None (fp32), "conversion", "tracing" or "optimizer"
    optimized_for: str | None = None  # "cuda": fused with ONNX Runtime's transformer optimizer
    needs_provider: str | None = None  # the onnxruntime provider the fused graphs need
    fused_nodes: dict[str, dict[str, int]] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, dict[str, float]] = field(default_factory=dict)  # component -> max_abs, max_rel
    engines: dict[str, Any] | None = None  # TensorRT: component -> plan file, batch_sizes
    components: dict[str, ComponentSpec] | None = None  # component -> its inputs and outputs

    def spec(self, component: str) -> ComponentSpec:
        """The recorded I/O of `component` (unet, vae_decoder); a bundle written before it was
        recorded gets the spec its export used, rebuilt from the shapes it recorded."""
        if self.components and component in self.components:
            return self.components[component]
        tokens, dim = self.text_shape or (0, 0)
        built = {
            "unet": lambda: unet_spec(self.latent_shape, tokens, dim),
            "vae_decoder": lambda: vae_decoder_spec(self.latent_shape, self.resolution),
        }
        if component not in built or (component == "unet" and self.text_shape is None):
            raise SamplingError(f"manifest.json records no spec of component {component!r}")
        return built[component]()

    @classmethod
    def from_dict(cls, data: dict, where: str = "manifest.json") -> Manifest:
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise SamplingError(f"{where} lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["latent_shape"] = tuple(values["latent_shape"])
        if values.get("text_shape") is not None:
            values["text_shape"] = tuple(values["text_shape"])
        values["defaults"] = Settings.from_dict(values.get("defaults") or {}, where)
        if values.get("components") is not None:
            values["components"] = {k: ComponentSpec.from_dict(k, v) for k, v in values["components"].items()}
        return cls(**values)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["latent_shape"] = list(self.latent_shape)
        out["text_shape"] = list(self.text_shape) if self.text_shape is not None else None
        if self.components is not None:
            out["components"] = {k: spec.to_dict(self.dtype) for k, spec in self.components.items()}
        return out


def write_manifest(bundle: Path, manifest: Manifest) -> None:
    """Written last into a bundle being assembled (atomic_dir renames the whole folder after)."""
    (Path(bundle) / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))


def load_manifest(bundle: str | Path, verify_hashes: bool = True) -> Manifest:
    """Read and validate a bundle's manifest: version, required keys, files present and unaltered."""
    bundle = Path(bundle)
    path = bundle / "manifest.json"
    if not path.is_file():
        raise SamplingError(f"{bundle} is not a bundle: manifest.json is missing")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SamplingError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise SamplingError(f"{path} is not a manifest: expected a JSON object")
    version = manifest.get("format_version")
    if version != MANIFEST_VERSION:
        raise SamplingError(
            f"bundle {bundle} has manifest format_version {version!r}; this polypsynth reads version "
            f"{MANIFEST_VERSION} (re-export the checkpoint)"
        )
    typed = Manifest.from_dict(manifest, f"bundle {bundle}: manifest.json")
    for name in ("unet.onnx", "vae_decoder.onnx", "conditioning.safetensors"):
        if name not in typed.files:
            raise SamplingError(f"bundle {bundle}: manifest.json lists no {name}")
    for name, digest in typed.files.items():
        f = bundle / name
        if not f.is_file():
            raise SamplingError(f"bundle {bundle} is missing {name}")
        if verify_hashes and file_sha256(f) != digest:
            raise SamplingError(f"bundle {bundle}: {name} was altered (sha256 differs from manifest.json)")
    return typed
