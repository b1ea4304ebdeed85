"""The ONNX Runtime backend over a bundle's unet.onnx and vae_decoder.onnx.

Providers are tried in the order requested (cpu, cuda, tensorrt), and every provider asked for
must be active in the session: ONNX Runtime silently falls back to the CPU when the CUDA provider
cannot load (for instance with the CPU package installed beside onnxruntime-gpu), which is refused
here. On CUDA the backend owns one torch stream and hands it to ONNX Runtime as its compute stream;
each run first waits for the caller's stream (where the inputs were written), inputs and outputs
are torch tensors bound by address (IO binding), and the caller's stream waits for the run, so
tensors never travel through the host and no run reads an input before it is written.

With `cuda_graphs` (CUDA provider first), ONNX Runtime records one CUDA graph per component and
batch shape (`enable_cuda_graph`, a `gpu_graph_id` per shape) and replays it: the graph reads and
writes fixed addresses, so each shape gets static input and output tensors bound once, inputs are
copied into them on the backend's stream and the output is cloned out before the next run."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from polypsynth.backends.registry import PROVIDERS
from polypsynth.bundle_format import Manifest, TensorSpec
from polypsynth.errors import SamplingError

_NP = {"fp32": np.float32, "fp16": np.float16}
_TORCH = {"fp32": torch.float32, "fp16": torch.float16}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def import_onnxruntime():
    """onnxruntime, with the reason when it is missing or installed twice (CPU and GPU builds)."""
    installed = [d for d in ("onnxruntime", "onnxruntime-gpu") if _installed(d)]
    if len(installed) == 2:
        raise SamplingError(
            "both onnxruntime and onnxruntime-gpu are installed; they share one module and the CUDA "
            "provider can vanish: pip uninstall -y onnxruntime onnxruntime-gpu, then install one "
            "(pip install 'polypsynth[cpu]' or 'polypsynth[gpu]')"
        )
    try:
        import onnxruntime
    except ImportError as exc:
        raise SamplingError(
            "ONNX Runtime is not installed: pip install 'polypsynth[cpu]' (CPU) or 'polypsynth[gpu]' (CUDA)"
        ) from exc
    return onnxruntime


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def resolve_providers(requested) -> list[str]:
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    names = []
    for item in requested:
        name = PROVIDERS.get(item, item)
        if name not in available:
            raise SamplingError(
                f"onnxruntime provider {item!r} is not available here; available providers: {', '.join(available)}"
                + (
                    " (the CUDA provider comes with onnxruntime-gpu: pip install 'polypsynth[gpu]')"
                    if name in _GPU_PROVIDERS
                    else ""
                )
            )
        names.append(name)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")  # for the few ops a GPU provider lacks
    return names


def check_active(requested: list[str], active: list[str], what: str) -> None:
    """Every provider asked for must be active in the session: no silent fallback to the CPU."""
    missing = [p for p in requested if p not in active]
    if missing:
        raise SamplingError(
            f"{what}: onnxruntime did not activate {', '.join(missing)} (active: {', '.join(active)}); "
            "check the CUDA / cuDNN libraries onnxruntime-gpu needs, and that the CPU package "
            "onnxruntime is not installed beside it"
        )


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(
        self,
        bundle: Path,
        manifest: Manifest,
        providers=("cpu",),
        threads: int | None = None,
        cuda_graphs: bool = False,
    ):
        ort = import_onnxruntime()
        self.providers = resolve_providers(providers)
        if cuda_graphs and self.providers[0] != "CUDAExecutionProvider":
            raise SamplingError(
                "--cuda-graphs with the onnxruntime backend needs the CUDA provider first (--provider cuda); "
                f"the providers asked for are {', '.join(self.providers)}"
            )
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[
            tuple[str, int], tuple
        ] = {}  # (component, batch) -> binding, inputs, output, run options
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.dtype_name = manifest.dtype
        self.np_dtype = _NP[manifest.dtype]
        self.torch_dtype = _TORCH[manifest.dtype]
        self.on_cuda = self.providers[0] in _GPU_PROVIDERS
        self.device = torch.device("cuda" if self.on_cuda else "cpu")
        # ORT computes on this stream wherever a GPU provider is asked for (see _provider_options)
        self.stream = torch.cuda.Stream() if any(p in _GPU_PROVIDERS for p in self.providers) else None
        provider_options = [self._provider_options(p) for p in self.providers]
        self.specs = {name: manifest.spec(name) for name in ("unet", "vae_decoder")}  # names, dtypes, shapes
        self.sessions = {}
        for name in ("unet", "vae_decoder"):
            try:
                session = ort.InferenceSession(
                    str(bundle / f"{name}.onnx"),
                    options,
                    providers=self.providers,
                    provider_options=provider_options,
                )
            except Exception as exc:  # onnxruntime's own errors (InvalidProtobuf, Fail, ...) share no base
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise SamplingError(
                    f"{bundle / name}.onnx cannot be loaded by ONNX Runtime ({first}); re-export the checkpoint"
                ) from exc
            check_active(self.providers, session.get_providers(), f"{bundle / name}.onnx")
            graph = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
            if graph != (self.specs[name].input_names, self.specs[name].output_names):
                raise SamplingError(
                    f"{bundle / name}.onnx has inputs {graph[0]} and outputs {graph[1]}, its manifest records "
                    f"{self.specs[name].input_names} and {self.specs[name].output_names}; re-export the checkpoint"
                )
            self.sessions[name] = session

    def _provider_options(self, provider: str) -> dict:
        if provider == "CUDAExecutionProvider" and self.stream is not None:
            options = {"user_compute_stream": str(self.stream.cuda_stream), "do_copy_in_default_stream": "1"}
            if self.cuda_graphs:
                options["enable_cuda_graph"] = "1"
            return options
        return {}

    def _graph_buffers(self, name: str, feeds: tuple[torch.Tensor, ...]) -> tuple:
        """The static tensors one (component, batch) graph reads and writes, bound once."""
        key = (name, feeds[0].shape[0])
        if key not in self._graphs:
            ort = import_onnxruntime()
            session = self.sessions[name]
            binding = session.io_binding()
            inputs = {}
            for tensor, t in zip(self.specs[name].inputs, feeds, strict=True):
                inputs[tensor.name] = torch.empty(t.shape, dtype=self._torch(tensor), device=self.device)
                binding.bind_input(
                    tensor.name, "cuda", 0, self._np(tensor), tuple(t.shape), inputs[tensor.name].data_ptr()
                )
            out = self._output(name, key[1])
            binding.bind_output(
                self.specs[name].outputs[0].name, "cuda", 0, self.np_dtype, tuple(out.shape), out.data_ptr()
            )
            run_options = ort.RunOptions()
            run_options.add_run_config_entry("gpu_graph_id", str(len(self._graphs) + 1))
            self._graphs[key] = (binding, inputs, out, run_options)
        return self._graphs[key]

    def _run_graph(self, name: str, feeds: tuple[torch.Tensor, ...]) -> torch.Tensor:
        binding, inputs, out, run_options = self._graph_buffers(name, feeds)
        caller, stream = torch.cuda.current_stream(), self.stream
        assert stream is not None
        stream.wait_stream(caller)  # inputs were written on the caller's stream
        with torch.cuda.stream(stream):
            for spec_in, tensor in zip(self.specs[name].inputs, feeds, strict=True):
                inputs[spec_in.name].copy_(tensor)
                if tensor.is_cuda:  # read on this stream: not to be reused before the copy ran
                    tensor.record_stream(stream)
            self.sessions[name].run_with_iobinding(binding, run_options)
            result = out.to(torch.float32, copy=True)  # the next replay overwrites `out`
        caller.wait_stream(stream)
        result.record_stream(caller)
        return result

    def _run(self, name: str, *feeds: torch.Tensor) -> torch.Tensor:
        """Component `name` on its inputs, given in the order of its spec."""
        session, spec = self.sessions[name], self.specs[name]
        if not self.on_cuda:
            arrays = {
                t.name: v.detach().cpu().numpy().astype(self._np(t))
                for t, v in zip(spec.inputs, feeds, strict=True)
            }
            return torch.from_numpy(session.run(None, arrays)[0]).float()
        if self.cuda_graphs:
            return self._run_graph(name, feeds)
        caller, stream = torch.cuda.current_stream(), self.stream
        assert stream is not None  # created whenever a GPU provider is asked for
        binding = session.io_binding()
        keep = []
        for spec_in, tensor in zip(spec.inputs, feeds, strict=True):
            t = tensor.to(self.device, self._torch(spec_in)).contiguous()  # the timestep stays float32
            keep.append(t)
            binding.bind_input(spec_in.name, "cuda", 0, self._np(spec_in), tuple(t.shape), t.data_ptr())
        out = self._output(name, feeds[0].shape[0])
        binding.bind_output(spec.outputs[0].name, "cuda", 0, self.np_dtype, tuple(out.shape), out.data_ptr())
        stream.wait_stream(caller)  # inputs were written on the caller's stream
        session.run_with_iobinding(binding)
        caller.wait_stream(stream)
        for t in (*keep, out):  # the caching allocator must not reuse them before the run ends
            t.record_stream(stream)
        return out.float()

    def _np(self, tensor: TensorSpec):
        return _NP[tensor.dtype(self.dtype_name)]

    def _torch(self, tensor: TensorSpec) -> torch.dtype:
        return _TORCH[tensor.dtype(self.dtype_name)]

    def _output(self, name: str, batch: int) -> torch.Tensor:
        spec = self.specs[name]
        return torch.empty(spec.shape(spec.outputs[0], batch), dtype=self.torch_dtype, device=self.device)

    def denoise(self, latents, timesteps, context):  # the unet spec's inputs, in its order
        return self._run("unet", latents, timesteps, context)

    def decode(self, latents):
        return self._run("vae_decoder", latents)
