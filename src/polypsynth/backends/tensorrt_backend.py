"""The TensorRT backend over a bundle's engines (unet.plan, vae_decoder.plan).

Written against TensorRT's Python API (10.x): one execution context per engine, device buffers
preallocated for the largest batch of the optimisation profile, dynamic batch by setting input
shapes, and optional CUDA graphs captured per fixed batch size."""

from __future__ import annotations

from pathlib import Path

import torch

from polypsynth.sampling.schedulers import SamplingError


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


class _Engine:
    def __init__(self, trt, path: Path, max_batch: int, cuda_graphs: bool):
        logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as fh:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise SamplingError(
                f"TensorRT could not load engine {path} (built for another GPU or TensorRT version?)"
            )
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output = next(n for n in self.names if n not in self.inputs)
        self.buffers = {}
        for name in self.names:
            shape = list(self.engine.get_tensor_profile_shape(name, 0)[2]) if name in self.inputs else None
            if shape is None:  # output: size it from the max input shapes
                for inp in self.inputs:
                    self.context.set_input_shape(inp, tuple(self.engine.get_tensor_profile_shape(inp, 0)[2]))
                shape = list(self.context.get_tensor_shape(name))
            dtype = (
                torch.float16 if self.engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
            )
            self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
        self.max_batch = max_batch
        self.stream = torch.cuda.Stream()
        self.cuda_graphs = cuda_graphs
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def __call__(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = next(iter(feeds.values())).shape[0]
        for name, tensor in feeds.items():
            buf = self.buffers[name][:batch]
            buf.copy_(tensor.to(buf.dtype))
            self.context.set_input_shape(name, tuple(buf.shape))
            self.context.set_tensor_address(name, buf.data_ptr())
        out_shape = tuple(self.context.get_tensor_shape(self.output))
        out = self.buffers[self.output]
        self.context.set_tensor_address(self.output, out.data_ptr())
        with torch.cuda.stream(self.stream):
            if self.cuda_graphs and batch in self.graphs:
                self.graphs[batch].replay()
            elif self.cuda_graphs:
                self.context.execute_async_v3(self.stream.cuda_stream)  # warm-up before capture
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    self.context.execute_async_v3(self.stream.cuda_stream)
                self.graphs[batch] = graph
                graph.replay()
            else:
                self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return out.flatten()[: int(torch.tensor(out_shape).prod())].view(out_shape).float().clone()


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, bundle: Path, manifest: dict, cuda_graphs: bool = False):
        trt = import_tensorrt()
        engines = manifest.get("engines") or {}
        if "unet" not in engines or "vae_decoder" not in engines:
            raise SamplingError(
                f"bundle {bundle} has no TensorRT engines; export it with --tensorrt on a GPU machine"
            )
        self.device = torch.device("cuda")
        max_batch = max(manifest["engines"]["batch_sizes"])
        self.unet = _Engine(trt, bundle / engines["unet"], 2 * max_batch, cuda_graphs)
        self.decoder = _Engine(trt, bundle / engines["vae_decoder"], max_batch, cuda_graphs)

    def denoise(self, latents, timesteps, context):
        return self.unet({"sample": latents, "timestep": timesteps, "encoder_hidden_states": context})

    def decode(self, latents):
        return self.decoder({"latent": latents})
