"""Every backend, named once: what it takes, whether it needs a bundle, what it checks in a bundle
before its runtime loads, and where its class lives. Importable without torch or any runtime (the
CLI builds its --backend choices and flags from it; `open_model` and the server load through it):
a backend's module is imported only when that backend is loaded."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from polypsynth.backends.protocol import Backend
from polypsynth.bundle_format import Manifest
from polypsynth.errors import SamplingError

# onnxruntime's providers by the names --provider takes
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _source_checkpoint(bundle: Path, manifest: Manifest, options: dict) -> None:
    source = manifest.source_checkpoint
    if not source or not Path(source).is_dir():
        raise SamplingError(
            f"the torch backend needs the bundle's source checkpoint, which is not found: {source}; "
            "use --backend onnxruntime for a bundle"
        )


def _provider(bundle: Path, manifest: Manifest, options: dict) -> None:
    needs = manifest.needs_provider
    asked = [PROVIDERS.get(p, p) for p in options.get("providers") or ("cpu",)]
    if needs and asked[0] != needs:
        providers = ", ".join(asked + ["CPUExecutionProvider"] * ("CPUExecutionProvider" not in asked))
        raise SamplingError(
            f"bundle {bundle} is optimised for onnxruntime's {needs} (fused operators that exist only "
            f"there), but the providers asked for are {providers}: pass --provider cuda on "
            "a GPU machine, or export the checkpoint again with --optimize none for a portable bundle"
        )


def _engines(bundle: Path, manifest: Manifest, options: dict) -> None:
    engines = manifest.engines or {}
    if "unet" not in engines or "vae_decoder" not in engines:
        raise SamplingError(
            f"bundle {bundle} has no TensorRT engines; export it with --tensorrt on a GPU machine"
        )


@dataclass(frozen=True)
class BackendKind:
    name: str
    takes: tuple[str, ...]  # the options it takes (the CLI's flags, the server's backend_options)
    needs_bundle: bool  # False: it also runs a checkpoint folder
    module: str  # where it lives (imported only when it is loaded)
    loader: str  # the callable of `module` building it from (bundle, manifest, **options)
    check: Callable[[Path, Manifest, dict], None]  # what it needs of a bundle, before it is built
    runtime: str | None = None  # the callable of `module` that imports its runtime, or says why it cannot


REGISTRY: dict[str, BackendKind] = {
    kind.name: kind
    for kind in (
        BackendKind(
            "torch",
            ("device", "dtype", "channels_last", "compile", "cuda_graphs"),
            needs_bundle=False,
            module="polypsynth.backends.torch_backend",
            loader="from_bundle",
            check=_source_checkpoint,
        ),
        BackendKind(
            "onnxruntime",
            ("providers", "cuda_graphs"),
            needs_bundle=True,
            module="polypsynth.backends.onnxruntime_backend",
            loader="OnnxRuntimeBackend",
            check=_provider,
            runtime="import_onnxruntime",
        ),
        BackendKind(
            "tensorrt",
            ("cuda_graphs",),
            needs_bundle=True,
            module="polypsynth.backends.tensorrt_backend",
            loader="TensorRTBackend",
            check=_engines,
            runtime="import_tensorrt",
        ),
    )
}
BACKENDS = tuple(REGISTRY)


def kind_of(backend: str) -> BackendKind:
    if backend not in REGISTRY:
        raise SamplingError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    return REGISTRY[backend]


def backend_options(backend: str, **given) -> dict:
    """The options for `backend` among `given`, leaving out those not set (None or False); an
    option set for a backend that does not take it is an error naming both, never ignored."""
    takes = kind_of(backend).takes
    chosen = {k: v for k, v in given.items() if v is not None and v is not False and v != ()}
    wrong = [k for k in chosen if k not in takes]
    if wrong:
        flags = ", ".join(_flag(k) for k in wrong)
        verb = "does" if len(wrong) == 1 else "do"
        raise SamplingError(
            f"{flags} {verb} not apply to the {backend} backend (it takes {', '.join(_flag(k) for k in takes)})"
        )
    return chosen


def _flag(option: str) -> str:
    return "--provider" if option == "providers" else "--" + option.replace("_", "-")


def load_backend(name: str, path, manifest: Manifest, **options) -> Backend:
    """Backend `name` over the bundle at `path`: its runtime first (is it installed, is there a
    GPU), then what it needs of the bundle, then the backend; the result is checked against the
    Backend protocol."""
    kind = kind_of(name)
    module = importlib.import_module(kind.module)
    if kind.runtime:
        getattr(module, kind.runtime)()
    kind.check(Path(path), manifest, options)
    backend = getattr(module, kind.loader)(Path(path), manifest, **options)
    if not isinstance(backend, Backend):  # a runtime check of the Protocol's members
        raise SamplingError(f"the {name} backend does not satisfy the Backend protocol")
    return backend
