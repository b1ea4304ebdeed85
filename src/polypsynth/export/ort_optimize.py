"""GPU-optimised graphs: ONNX Runtime's transformer optimizer, as its own Stable Diffusion recipe
applies it, on a bundle's fp32 U-Net and VAE decoder.

1. fusions on the fp32 graph (`optimize_model`, model type "unet" / "vae", GPU fusions): attention
   becomes MultiHeadAttention (flash attention on CUDA), GroupNorm and SkipGroupNorm kernels,
   NHWC convolutions, BiasSplitGelu and BiasAdd;
2. every `Constant` node folded into an initializer, so that the fp16 converter sees Resize's
   scales as the initializers it keeps in fp32 (converted as Constant nodes they turn fp16, which
   makes an invalid graph);
3. fp16 conversion, the timestep input kept fp32 as in every bundle.

The fused kernels (NhwcConv, GroupNorm, SkipGroupNorm, BiasSplitGelu) exist only in the CUDA
provider: an optimised bundle needs it (`needs_provider` in its manifest). ONNX Runtime's own
offline pass (`optimize_by_onnxruntime`) is left out: it only saves session start-up time, ties the
file to one provider build, and the session applies the same optimisations at load
(ORT_ENABLE_ALL)."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from polypsynth.errors import PolypsynthError

OPTIMIZE = ("none", "cuda")
FUSED = ("MultiHeadAttention", "GroupNorm", "SkipGroupNorm", "NhwcConv", "BiasSplitGelu", "BiasAdd")
MODEL_TYPES = {"unet": "unet", "vae_decoder": "vae"}
NEEDS_PROVIDER = "CUDAExecutionProvider"


class OptimizeError(PolypsynthError):
    """The optimizer failed or produced a graph that is not valid."""


def _num_heads_torch2(original):
    """FusionAttentionUnet.get_num_heads with its PyTorch-2 branch reading a one-element array by
    `.item()`: onnxruntime <= 1.32 calls int() on it, which NumPy >= 2.4 refuses."""

    def get_num_heads(self, reshape_q, is_torch2: bool = False) -> int:
        if not is_torch2:
            return original(self, reshape_q, is_torch2)
        parent = self.model.get_parent(reshape_q, 1)
        if parent is not None and parent.op_type == "Concat" and len(parent.input) == 4:
            value = self.model.get_constant_value(parent.input[2])
            if isinstance(value, np.ndarray) and value.size == 1 and int(value.item()) > 0:
                return int(value.item())
        return 0

    return get_num_heads


def _attention_classes() -> list[Any]:
    """FusionAttentionUnet as the optimizer uses it: onnxruntime.transformers puts its own folder on
    sys.path and imports its fusions as top-level modules, so the class exists twice."""
    import sys

    import onnxruntime.transformers.optimizer  # noqa: F401  (imports the fusions)

    modules = ("fusion_attention_unet", "onnxruntime.transformers.fusion_attention_unet")
    found = {sys.modules[m].FusionAttentionUnet for m in modules if m in sys.modules}
    return sorted(found, key=id)


def _reads_one_element_heads(cls) -> bool:
    import onnx

    concat = onnx.helper.make_node("Concat", ["a", "b", "heads", "d"], ["shape"], axis=0)
    model = SimpleNamespace(get_parent=lambda node, i: concat, get_constant_value=lambda name: np.array([2]))
    try:
        return cls.get_num_heads(SimpleNamespace(model=model), None, True) == 2
    except TypeError:
        return False


def needs_num_heads_shim() -> bool:
    """Whether the installed optimizer still fails on a one-element head count (probed, not
    guessed from versions): the shim goes away by itself once onnxruntime reads it right."""
    return not all(_reads_one_element_heads(cls) for cls in _attention_classes())


@contextmanager
def num_heads_shim() -> Iterator[bool]:
    """While inside, FusionAttentionUnet.get_num_heads works under NumPy >= 2.4 (yields whether it
    had to be patched); restored on the way out."""
    broken = [cls for cls in _attention_classes() if not _reads_one_element_heads(cls)]
    originals = {cls: cls.get_num_heads for cls in broken}
    for cls, original in originals.items():
        cls.get_num_heads = _num_heads_torch2(original)
    try:
        yield bool(broken)
    finally:
        for cls, original in originals.items():
            cls.get_num_heads = original


def constants_to_initializers(graph) -> int:
    """Fold every tensor-valued Constant node into an initializer of the same name."""
    import onnx

    folded = 0
    for node in list(graph.node):
        if node.op_type != "Constant":
            continue
        value = next((a for a in node.attribute if a.name == "value"), None)
        if value is None:
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value.t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
        folded += 1
    return folded


@contextmanager
def _named_spatial_dims(graph) -> Iterator[None]:
    """The image inputs' and outputs' height and width as named dims while inside, numbers again
    on the way out. The fp16 converter types the graph by ORT's symbolic shape inference, which
    reads a fused NhwcConv's output shape from value_info whenever the spatial dims are numbers,
    finds none and gives up (the converter then goes on untyped); with named dims it computes them."""
    fixed = {}
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            for axis in (2, 3):
                fixed[(value.name, axis)] = dims[axis].dim_value
                dims[axis].dim_param = f"{value.name}_{'hw'[axis - 2]}"
    try:
        yield
    finally:
        for value in (*graph.input, *graph.output):
            for axis in (2, 3):
                if (value.name, axis) in fixed:
                    value.type.tensor_type.shape.dim[axis].dim_value = fixed[(value.name, axis)]


def float_shape_inputs(graph) -> dict[str, str]:
    """Resize scales that are not float32 (name -> type): what makes an fp16 graph invalid."""
    import onnx

    types = {i.name: i.data_type for i in graph.initializer}
    for node in graph.node:
        for attribute in node.attribute if node.op_type == "Constant" else ():
            if attribute.name == "value":
                types[node.output[0]] = attribute.t.data_type
    wrong = {}
    for node in graph.node:
        if node.op_type == "Resize" and len(node.input) > 2 and node.input[2]:
            kind = types.get(node.input[2])
            if kind is not None and kind != onnx.TensorProto.FLOAT:
                wrong[node.input[2]] = onnx.TensorProto.DataType.Name(kind)
    return wrong


def optimize_for_cuda(path: Path, component: str, keep_fp32: list[str], fp16: bool = True) -> dict[str, int]:
    """Rewrite the fp32 graph at `path` in place as a CUDA-optimised graph (fp16 unless `fp16` is
    False); returns its fused-node counts."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = MODEL_TYPES[component]
    options = FusionOptions(model_type)
    if not fp16:  # packed q/k/v only have fp16 kernels
        options.enable_packed_kv = options.enable_packed_qkv = False
    try:
        with num_heads_shim():
            optimized = optimize_model(
                str(path),
                model_type=model_type,
                num_heads=0,  # read from the graph
                hidden_size=0,
                opt_level=0,  # fusions only; the session optimises the rest at load
                optimization_options=options,
                use_gpu=True,
            )
    except Exception as exc:  # the optimizer's own failures carry no file name
        raise OptimizeError(f"{path.name}: ONNX Runtime's transformer optimizer failed: {exc}") from exc
    constants_to_initializers(optimized.model.graph)
    optimized.topological_sort()
    if fp16:
        with _named_spatial_dims(optimized.model.graph):
            optimized.convert_float_to_float16(keep_io_types=keep_fp32)
    wrong = float_shape_inputs(optimized.model.graph)
    if wrong:
        raise OptimizeError(f"{path.name}: shape inputs not float32 after the fp16 conversion: {wrong}")
    size = optimized.model.ByteSize()  # negative past 2 GB on some platforms
    external = size <= 0 or size >= onnx.checker.MAXIMUM_PROTOBUF
    Path(str(path) + ".data").unlink(missing_ok=True)
    optimized.save_model_to_file(str(path), use_external_data_format=external)  # adds the com.microsoft opset
    onnx.checker.check_model(str(path))
    counts = collections.Counter(n.op_type for n in optimized.model.graph.node)
    return {op: counts[op] for op in FUSED if counts[op]}
