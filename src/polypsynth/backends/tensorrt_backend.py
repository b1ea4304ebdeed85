"""The TensorRT backend over a bundle's engines (unet.plan, vae_decoder.plan).

Written against TensorRT's Python API (10.12+ and 11.x): one execution context per engine, device
buffers preallocated for the largest batch of the optimisation profile, dynamic batch by setting
input shapes (every return value checked), and optional CUDA graphs captured per batch size. The
engine runs on its own stream, which first waits for the caller's (where the inputs were copied),
and the caller's stream then waits for it: no host synchronisation, no race."""

from __future__ import annotations

from pathlib import Path

import torch

from polypsynth.bundle_format import Manifest
from polypsynth.errors import SamplingError


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise SamplingError(
            "the tensorrt backend needs the TensorRT Python package and a CUDA GPU: "
            "pip install 'polypsynth[gpu]' on a machine with one"
        ) from exc
    if not torch.cuda.is_available():
        raise SamplingError("the tensorrt backend needs a CUDA GPU; torch sees none")
    return trt


def torch_dtype(trt, dtype) -> torch.dtype:
    """The torch dtype of a TensorRT tensor type; an unknown type is an error, never a guess."""
    table = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
        "UINT8": torch.uint8,
        "FP8": getattr(torch, "float8_e4m3fn", None),
    }
    for name, value in table.items():
        if value is not None and hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return value
    raise SamplingError(f"TensorRT tensor type {dtype} has no torch equivalent here")


def batch_range(trt, engine, inputs) -> tuple[int, int]:
    """The smallest and largest batch every input's profile 0 accepts."""
    los, his = [], []
    for name in inputs:
        lo, _, hi = engine.get_tensor_profile_shape(name, 0)
        los.append(lo[0])
        his.append(hi[0])
    return max(los), min(his)


class _Engine:
    def __init__(self, trt, path: Path, cuda_graphs: bool):
        logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as fh:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise SamplingError(
                f"TensorRT could not load engine {path} (built for another GPU or TensorRT version?)"
            )
        self.path = path
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output = next(n for n in names if n not in self.inputs)
        self.min_batch, self.max_batch = batch_range(trt, self.engine, self.inputs)
        self.buffers = {}
        for name in self.inputs:
            shape = tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
            self._set_shape(name, shape)
            self.buffers[name] = torch.empty(
                shape, dtype=torch_dtype(trt, self.engine.get_tensor_dtype(name)), device="cuda"
            )
        out_shape = tuple(self.context.get_tensor_shape(self.output))  # at the largest input shapes
        self.buffers[self.output] = torch.empty(
            out_shape, dtype=torch_dtype(trt, self.engine.get_tensor_dtype(self.output)), device="cuda"
        )
        self.stream = torch.cuda.Stream()
        self.cuda_graphs = cuda_graphs
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, shape):
            raise SamplingError(f"{self.path.name}: TensorRT refused input {name} of shape {shape}")

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise SamplingError(f"{self.path.name}: TensorRT execution failed (see its log)")

    def __call__(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = next(iter(feeds.values())).shape[0]
        if not self.min_batch <= batch <= self.max_batch:
            raise SamplingError(
                f"{self.path.name} covers batches {self.min_batch}-{self.max_batch}, got {batch}; "
                "re-export with --batch-sizes covering it, or lower --max-batch / --batch-size"
            )
        for name, tensor in feeds.items():
            buf = self.buffers[name][:batch]
            buf.copy_(tensor)  # on the caller's stream
            self._set_shape(name, tuple(buf.shape))
            self.context.set_tensor_address(name, buf.data_ptr())
        out_shape = tuple(self.context.get_tensor_shape(self.output))
        out = self.buffers[self.output]
        self.context.set_tensor_address(self.output, out.data_ptr())
        caller = torch.cuda.current_stream()
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            if self.cuda_graphs and batch in self.graphs:
                self.graphs[batch].replay()
            elif self.cuda_graphs:
                self._execute()  # warm-up before capture
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    self._execute()
                self.graphs[batch] = graph
                graph.replay()
            else:
                self._execute()
        caller.wait_stream(self.stream)
        count = int(torch.Size(out_shape).numel())
        # a copy made on the caller's stream: the next call overwrites the buffer
        return out.flatten()[:count].view(out_shape).to(torch.float32, copy=True)


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, bundle: Path, manifest: Manifest, cuda_graphs: bool = False):
        trt = import_tensorrt()
        engines = manifest.engines or {}  # both there: the registry's bundle check
        self.device = torch.device("cuda")
        self.dtype_name = manifest.dtype
        self.specs = {
            name: manifest.spec(name) for name in ("unet", "vae_decoder")
        }  # the engines' input names
        self.unet = _Engine(trt, bundle / engines["unet"], cuda_graphs)
        self.decoder = _Engine(trt, bundle / engines["vae_decoder"], cuda_graphs)

    def denoise(self, latents, timesteps, context):  # the unet spec's inputs, in its order
        names = self.specs["unet"].input_names
        return self.unet(dict(zip(names, (latents, timesteps, context), strict=True)))

    def decode(self, latents):
        return self.decoder(dict(zip(self.specs["vae_decoder"].input_names, (latents,), strict=True)))
