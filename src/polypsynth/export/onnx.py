"""ONNX export of one component from its spec, the checker, and the parity check against PyTorch."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch

from polypsynth.backends.onnxruntime_backend import import_onnxruntime
from polypsynth.errors import PolypsynthError
from polypsynth.export.spec import ComponentSpec, sample_inputs


class ExportError(PolypsynthError):
    """Export failed or its output does not match PyTorch."""


def trace_device(dtype=torch.float32) -> torch.device:
    """Where a graph of `dtype` is traced: fp16 on CUDA when there is a GPU (fp16 arithmetic on a
    CPU runs at under 1 GFLOP/s, tens of minutes for an SD1.5 U-Net), everything else on the CPU."""
    return torch.device("cuda" if dtype == torch.float16 and torch.cuda.is_available() else "cpu")


MIN_OPSET = 14  # scaled_dot_product_attention, in every attention of the U-Net and the VAE


def max_opset() -> int:
    """The newest opset the installed torch exporters write (23 in torch 2.14, both exporters:
    tested)."""
    from torch.onnx import _constants  # the exporters' own limit; no public name exists

    return int(getattr(_constants, "ONNX_MAX_OPSET", 18))


def check_opset(opset: int) -> int:
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise ExportError(
            f"--opset must be between {MIN_OPSET} (attention needs it) and {top} (the newest this torch "
            f"exports), got {opset}"
        )
    return opset


def export_onnx(
    module: torch.nn.Module,
    spec: ComponentSpec,
    path: Path,
    *,
    opset: int = 17,
    dtype=torch.float32,
    exporter: str = "torchscript",
    device: str | torch.device | None = None,
) -> Path:
    """Export `module` to `path` with `dtype` weights and float inputs/outputs (timesteps stay
    float32); graphs over 2 GB keep their weights in external data files. An fp16 graph is traced
    in fp16 on CUDA, or traced in fp32 on the CPU and converted by ONNX Runtime's float16 tool."""
    import onnx

    device = torch.device(device) if device is not None else trace_device(dtype)
    convert = dtype == torch.float16 and device.type == "cpu"
    trace_dtype = torch.float32 if convert else dtype
    # A copy: the caller's weights stay untouched (fp32, where they were).
    module = copy.deepcopy(module).eval().to(device, trace_dtype)
    inputs = tuple(x.to(device) for x in sample_inputs(spec, 2, trace_dtype))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                module,
                inputs,
                str(path),
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes(),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        elif exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            dims = {t.name: {0: batch} for t in spec.inputs}
            program = torch.onnx.export(
                module,
                inputs,
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_shapes=dims,
                opset_version=max(opset, 18),
                dynamo=True,
            )
            if program is None:
                raise ExportError(f"torch.onnx.export (dynamo) returned no program for {path.name}")
            program.save(str(path))
        else:
            raise ExportError(f"unknown exporter {exporter!r}; expected torchscript or dynamo")
    del module
    consolidate_external_data(path)
    if convert:
        convert_to_fp16(path, keep=[t.name for t in spec.inputs if t.kind == "timestep"])
    onnx.checker.check_model(str(path))  # by path: works for graphs with external data
    return path


def convert_to_fp16(path: Path, keep: list[str]) -> None:
    """Rewrite an fp32 graph as fp16 (ONNX Runtime's converter: fp16 weights and float
    inputs/outputs, casts around the ops it keeps in fp32), inputs named in `keep` stay fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    external = bool(external_locations(path))
    # By path: shape inference then works on graphs over 2 GB too.
    model = OnnxModel(convert_float_to_float16(str(path), keep_io_types=keep))
    model.topological_sort()  # the converter appends the casts of kept inputs at the end
    model = model.model
    data = path.name + ".data"
    (path.parent / data).unlink(missing_ok=True)
    onnx.save_model(
        model, str(path), save_as_external_data=external, all_tensors_to_one_file=True, location=data
    )


def external_locations(path: Path) -> set[str]:
    """Files a graph keeps its tensors in (empty when every tensor is inside the .onnx)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {
        entry.value
        for init in model.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
        for entry in init.external_data
        if entry.key == "location"
    }


def consolidate_external_data(path: Path) -> None:
    """Graphs over 2 GB (protobuf's limit) come out of the exporter with one file per tensor;
    keep them as `<name>.onnx` + one `<name>.onnx.data`, as TensorRT and ORT expect."""
    import onnx

    target = path.name + ".data"
    locations = external_locations(path)
    if not locations or locations == {target}:
        return
    model = onnx.load(str(path), load_external_data=True)  # never serialised whole: no 2 GB limit hit
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=target
    )
    for name in locations - {target}:
        (path.parent / name).unlink(missing_ok=True)


def parity(
    module: torch.nn.Module,
    spec: ComponentSpec,
    path: Path,
    *,
    dtype=torch.float32,
    batch: int = 2,
    seed: int = 1234,
    provider: str = "CPUExecutionProvider",
) -> dict[str, float]:
    """Max absolute and relative error of ONNX Runtime (`provider`, CPU by default) against
    PyTorch fp32 on fresh inputs."""

    ort = import_onnxruntime()
    inputs = sample_inputs(spec, batch, torch.float32, seed=seed)
    with torch.no_grad():
        reference = module.eval().float()(*inputs).float().numpy()
    session = ort.InferenceSession(str(path), providers=[provider])
    if session.get_providers()[0] != provider:
        raise ExportError(f"{spec.name}: onnxruntime could not start {provider} for the parity check")
    np_dtype = np.float16 if dtype == torch.float16 else np.float32
    feeds = {
        t.name: x.numpy().astype(np.float32 if t.kind == "timestep" else np_dtype)
        for t, x in zip(spec.inputs, inputs, strict=True)
    }
    got = session.run(None, feeds)[0].astype(np.float32)
    if not np.isfinite(reference).all():
        raise ExportError(
            f"{spec.name}: PyTorch gives non-finite values (NaN or inf) on the parity inputs: the "
            "checkpoint's weights are broken; bundle not written"
        )
    if not np.isfinite(got).all():
        raise ExportError(
            f"{spec.name}: ONNX Runtime gives non-finite values (NaN or inf) in "
            f"{'fp16' if dtype == torch.float16 else 'fp32'} where PyTorch fp32 is finite "
            "(fp16 overflow?); bundle not written"
        )
    diff = np.abs(got - reference)
    return {
        "max_abs": float(diff.max()),
        "max_rel": float(diff.max() / max(float(np.abs(reference).max()), 1e-12)),
        "batch": batch,
        "seed": seed,
    }
