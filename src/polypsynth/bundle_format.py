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
from pathlib import Path

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


def load_manifest(bundle: str | Path, verify_hashes: bool = True) -> dict:
    """Read and validate a bundle's manifest: version, required keys, files present and unaltered."""
    bundle = Path(bundle)
    path = bundle / "manifest.json"
    if not path.is_file():
        raise SamplingError(f"{bundle} is not a bundle: manifest.json is missing")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SamplingError(f"{path} is not valid JSON: {exc}") from exc
    version = manifest.get("format_version")
    if version != MANIFEST_VERSION:
        raise SamplingError(
            f"bundle {bundle} has manifest format_version {version!r}; this polypsynth reads version "
            f"{MANIFEST_VERSION} (re-export the checkpoint)"
        )
    required = (
        "source_hash",
        "resolution",
        "latent_shape",
        "scaling_factor",
        "scheduler_config",
        "classes",
        "dtype",
        "files",
    )
    missing = [k for k in required if k not in manifest]
    if missing:
        raise SamplingError(f"bundle {bundle}: manifest.json lacks {', '.join(missing)}")
    for name in ("unet.onnx", "vae_decoder.onnx", "conditioning.safetensors"):
        if name not in manifest["files"]:
            raise SamplingError(f"bundle {bundle}: manifest.json lists no {name}")
    for name, digest in manifest["files"].items():
        f = bundle / name
        if not f.is_file():
            raise SamplingError(f"bundle {bundle} is missing {name}")
        if verify_hashes and file_sha256(f) != digest:
            raise SamplingError(f"bundle {bundle}: {name} was altered (sha256 differs from manifest.json)")
    return manifest
