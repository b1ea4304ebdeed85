"""ONNX export of one component from its spec, the checker, and the parity check against PyTorch."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch

from polypsynth.errors import PolypsynthError
from polypsynth.export.spec import ComponentSpec


class ExportError(PolypsynthError):
    """Export failed or its output does not match PyTorch."""


def export_onnx(
    module: torch.nn.Module,
    spec: ComponentSpec,
    path: Path,
    opset: int = 17,
    dtype=torch.float32,
    exporter: str = "torchscript",
) -> Path:
    """Export `module` to `path`; graphs over 2 GB keep their weights in external data files."""
    import onnx

    module = copy.deepcopy(module).eval().to(dtype)  # the caller's weights stay untouched (fp32)
    inputs = spec.sample_inputs(2, dtype)
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
            program.save(str(path))
        else:
            raise ExportError(f"unknown exporter {exporter!r}; expected torchscript or dynamo")
    consolidate_external_data(path)
    onnx.checker.check_model(str(path))  # by path: works for graphs with external data
    return path


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
    dtype=torch.float32,
    batch: int = 2,
    seed: int = 1234,
) -> dict[str, float]:
    """Max absolute and relative error of ONNX Runtime (CPU) against PyTorch fp32 on fresh inputs."""
    import onnxruntime as ort

    inputs = spec.sample_inputs(batch, torch.float32, seed=seed)
    with torch.no_grad():
        reference = module.eval().float()(*inputs).float().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np_dtype = np.float16 if dtype == torch.float16 else np.float32
    feeds = {
        t.name: x.numpy().astype(np.float32 if t.kind == "timestep" else np_dtype)
        for t, x in zip(spec.inputs, inputs, strict=True)
    }
    got = session.run(None, feeds)[0].astype(np.float32)
    diff = np.abs(got - reference)
    return {
        "max_abs": float(diff.max()),
        "max_rel": float(diff.max() / max(float(np.abs(reference).max()), 1e-12)),
        "batch": batch,
        "seed": seed,
    }
