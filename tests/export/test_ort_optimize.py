"""GPU-optimised bundles (export/ort_optimize.py), checked on a CPU: the fused kernels replace
the plain ops they stand for, the graphs pass the ONNX checker with their shape inputs in fp32,
and a bundle that needs the CUDA provider says so wherever it meets a CPU."""

import collections
import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from polypsynth.cli import main
from polypsynth.export import ort_optimize
from polypsynth.export.bundle import export_bundle
from polypsynth.export.onnx import ExportError


def _ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _inputs(path) -> dict[str, int]:
    return {i.name: i.type.tensor_type.elem_type for i in onnx.load(str(path)).graph.input}


@pytest.fixture(scope="module")
def optimised(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("optimised")
    counts = {}
    for name in ("unet", "vae_decoder"):
        shutil.copy(tiny_bundle / f"{name}.onnx", out / f"{name}.onnx")
        counts[name] = ort_optimize.optimize_for_cuda(out / f"{name}.onnx", name, ["timestep"])
    return out, counts


def test_every_attention_norm_conv_and_gelu_becomes_a_fused_kernel(tiny_bundle, optimised):
    out, counts = optimised
    plain, fused = _ops(tiny_bundle / "unet.onnx"), _ops(out / "unet.onnx")
    # U-Net: each Softmax was one attention, each InstanceNormalization one GroupNorm, each Erf one GELU.
    assert fused["MultiHeadAttention"] == plain["Softmax"] > 0 and fused["Softmax"] == 0
    assert fused["NhwcConv"] == plain["Conv"] > 0 and fused["Conv"] == 0
    assert fused["GroupNorm"] + fused["SkipGroupNorm"] == plain["InstanceNormalization"] > 0
    assert fused["SkipGroupNorm"] > 0 and fused["InstanceNormalization"] == 0
    assert fused["BiasSplitGelu"] == plain["Erf"] > 0 and fused["BiasAdd"] > 0
    assert counts["unet"] == {op: fused[op] for op in ort_optimize.FUSED if fused[op]}
    # VAE decoder: every convolution NHWC, all but its attention's GroupNorm fused.
    plain, fused = _ops(tiny_bundle / "vae_decoder.onnx"), _ops(out / "vae_decoder.onnx")
    assert fused["NhwcConv"] == plain["Conv"] > 0 and fused["Conv"] == 0
    assert fused["InstanceNormalization"] <= 1 and fused["GroupNorm"] + fused["SkipGroupNorm"] > 0


def test_the_optimised_graphs_are_valid_fp16_with_fp32_shape_inputs(optimised):
    out, _ = optimised
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert _inputs(out / "unet.onnx") == {"sample": f16, "timestep": f32, "encoder_hidden_states": f16}
    assert _inputs(out / "vae_decoder.onnx") == {"latent": f16}
    for name in ("unet", "vae_decoder"):
        onnx.checker.check_model(str(out / f"{name}.onnx"))
        model = onnx.load(str(out / f"{name}.onnx"))
        assert any(o.domain == "com.microsoft" for o in model.opset_import)
        resizes = [n for n in model.graph.node if n.op_type == "Resize"]
        assert resizes and ort_optimize.float_shape_inputs(model.graph) == {}
        scales = {i.name: i.data_type for i in model.graph.initializer}
        assert all(scales[n.input[2]] == f32 for n in resizes)
        # The latent's height and width are numbers again (named only while converting).
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims[1:] == [4, 8, 8]


def test_without_folding_the_constants_resize_scales_turn_fp16(tiny_bundle, monkeypatch, tmp_path):
    """The trap that folding the constants and naming the spatial dims each avoid (the converter,
    left untyped, converts the Constant scales), caught by the check: the export refuses the graph."""
    import contextlib

    shutil.copy(tiny_bundle / "vae_decoder.onnx", tmp_path / "vae_decoder.onnx")
    monkeypatch.setattr(ort_optimize, "constants_to_initializers", lambda graph: 0)
    monkeypatch.setattr(ort_optimize, "_named_spatial_dims", lambda graph: contextlib.nullcontext())
    with pytest.raises(
        ort_optimize.OptimizeError, match="shape inputs not float32 after the fp16 conversion"
    ):
        ort_optimize.optimize_for_cuda(tmp_path / "vae_decoder.onnx", "vae_decoder", [])


def test_the_num_heads_shim_is_applied_only_while_needed_and_undone():
    try:
        int(np.array([2]))
        numpy_refuses = False
    except TypeError:
        numpy_refuses = True
    classes = ort_optimize._attention_classes()
    assert len(classes) >= 1
    originals = [cls.get_num_heads for cls in classes]
    assert ort_optimize.needs_num_heads_shim() == numpy_refuses
    with ort_optimize.num_heads_shim() as patched:
        assert patched == numpy_refuses
        assert not ort_optimize.needs_num_heads_shim()  # inside, a one-element head count reads right
    assert [cls.get_num_heads for cls in classes] == originals


def test_cuda_optimisation_needs_the_cuda_provider_and_no_tensorrt(tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(
        ExportError,
        match=r"--optimize cuda needs onnxruntime's CUDAExecutionProvider \(.*\); available here: .*CPUExecutionProvider\. ",
    ):
        export_bundle(tiny_checkpoint, out, dtype="fp16", optimize="cuda")
    with pytest.raises(
        ExportError, match="TensorRT cannot parse: build TensorRT engines from a portable bundle"
    ):
        export_bundle(tiny_checkpoint, out, dtype="fp16", optimize="cuda", tensorrt=True)
    with pytest.raises(ExportError, match="unknown optimisation 'tensorrt'; expected one of none, cuda"):
        export_bundle(tiny_checkpoint, out, dtype="fp16", optimize="tensorrt")
    assert not out.exists()


def test_an_optimised_bundle_records_its_kernels_and_refuses_the_cpu(tiny_checkpoint, tmp_path, monkeypatch):
    """The export path of an optimised bundle, run on a CPU: the parity check, which needs the CUDA
    provider, measured on the plain graph instead (gpu_check runs the real one)."""
    from polypsynth.export import bundle as bundle_mod

    monkeypatch.setattr(bundle_mod, "_check_optimize", lambda optimize, dtype, tensorrt: "cuda")
    asked = []

    def parity_on_cpu(module, spec, path, dtype, provider):
        asked.append(provider)
        return {"max_abs": 0.0, "max_rel": 0.0, "batch": 2, "seed": 0}

    monkeypatch.setattr(bundle_mod, "parity", parity_on_cpu)
    manifest = export_bundle(tiny_checkpoint, tmp_path / "b", dtype="fp16")
    assert asked == ["CUDAExecutionProvider"] * 2
    assert manifest.optimized_for == "cuda" and manifest.needs_provider == "CUDAExecutionProvider"
    assert manifest.fp16_by == "optimizer"
    assert (
        manifest.fused_nodes["unet"]["MultiHeadAttention"]
        == _ops(tmp_path / "b" / "unet.onnx")["MultiHeadAttention"]
    )
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["fused_nodes"] == manifest.fused_nodes
    result = CliRunner().invoke(
        main,
        [
            "sample",
            "--model",
            str(tmp_path / "b"),
            "--class",
            "AD",
            "--count",
            "1",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert result.exit_code == 1
    assert (
        f"bundle {tmp_path / 'b'} is optimised for onnxruntime's CUDAExecutionProvider (fused operators that "
        "exist only there), but the providers asked for are CPUExecutionProvider" in result.output
    )
    assert not (tmp_path / "s").exists()


def test_the_default_on_a_cpu_is_the_portable_graph(tiny_checkpoint, tmp_path):
    manifest = export_bundle(tiny_checkpoint, tmp_path / "b", dtype="fp16")
    assert manifest.optimized_for is None and manifest.needs_provider is None
    assert manifest.fused_nodes is None and manifest.fp16_by == "conversion"
