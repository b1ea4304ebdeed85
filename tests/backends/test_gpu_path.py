"""The GPU path, as far as a CPU can exercise it: non-finite outputs refused at sampling and export,
fp16 export by conversion with the manifest's types, profiles covering every batch the loop sends,
providers checked after session creation, backend options reachable and validated, TensorRT type
mapping, and CUDA graphs (on a GPU)."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from polypsynth.backends import backend_options
from polypsynth.backends.onnxruntime_backend import check_active, import_onnxruntime
from polypsynth.backends.tensorrt_backend import torch_dtype
from polypsynth.cli import main
from polypsynth.errors import SamplingError
from polypsynth.export.bundle import export_bundle
from polypsynth.export.onnx import ExportError
from polypsynth.export.spec import unet_spec, vae_decoder_spec
from polypsynth.models import load_components, save_components
from polypsynth.sampling.loop import sample_batch
from polypsynth.sampling.model import open_model
from polypsynth.sampling.request import Settings, make_params
from polypsynth.sampling.to_folder import sample_to_folder
from polypsynth.serve.server import SamplerServer, ServeError, ServerOptions


def _altered_checkpoint(tiny_checkpoint, tmp_path, change):
    components = load_components(tiny_checkpoint)
    with torch.no_grad():
        change(components)
    folder = tmp_path / "altered"
    save_components(components, folder)
    shutil.copy(tiny_checkpoint / "polypsynth.json", folder / "polypsynth.json")
    return folder


@pytest.fixture
def nan_checkpoint(tiny_checkpoint, tmp_path):
    def poison(c):
        c.unet.conv_out.weight[0, 0, 0, 0] = float("nan")

    return _altered_checkpoint(tiny_checkpoint, tmp_path, poison)


def test_non_finite_sampling_fails_and_writes_nothing(nan_checkpoint, tmp_path):
    model = open_model(nan_checkpoint, "torch")
    with pytest.raises(
        SamplingError,
        match=r"the torch backend in fp32 produced non-finite values \(NaN or inf\) in the final latents; no image was kept",
    ):
        sample_batch(model, [0, 1], ["AD", "NON_AD"], Settings(2, 3.0, "dpm++"))
    params = make_params("AD", 3, steps=2)
    with pytest.raises(SamplingError, match="non-finite"):
        sample_to_folder(model, params, tmp_path / "out", batch_size=2)
    assert not (tmp_path / "out" / "AD").exists()


def test_non_finite_export_is_refused_and_writes_nothing(nan_checkpoint, tmp_path):
    with pytest.raises(
        ExportError,
        match=r"unet: PyTorch gives non-finite values \(NaN or inf\) on the parity inputs: the checkpoint's weights are broken; bundle not written",
    ):
        export_bundle(nan_checkpoint, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_fp16_overflow_is_refused_at_export(tiny_checkpoint, tmp_path):
    """Outputs past fp16's range (65504) are inf in the fp16 graph while PyTorch fp32 is finite."""

    def scale(c):
        c.vae.decoder.conv_out.weight.mul_(1e7)

    big = _altered_checkpoint(tiny_checkpoint, tmp_path, scale)
    with pytest.raises(
        ExportError,
        match=r"vae_decoder: ONNX Runtime gives non-finite values \(NaN or inf\) in fp16 where PyTorch fp32 is finite",
    ):
        export_bundle(big, tmp_path / "b16", dtype="fp16")
    assert not (tmp_path / "b16").exists()


def test_fp16_export_by_conversion_keeps_the_manifest_types(tiny_checkpoint, tmp_path):
    import onnx

    m = export_bundle(tiny_checkpoint, tmp_path / "b16", dtype="fp16")
    assert m.dtype == "fp16" and m.traced_on == "cpu" and m.fp16_by == "conversion"
    assert m.parity["unet"]["max_rel"] < 2e-2 and m.parity["vae_decoder"]["max_rel"] < 2e-2
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    graph = onnx.load(str(tmp_path / "b16" / "unet.onnx")).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}
    assert types == {"sample": f16, "timestep": f32, "encoder_hidden_states": f16, "noise_pred": f16}
    weights = [i.data_type for i in graph.initializer if i.data_type in (f16, f32) and len(i.dims) == 4]
    assert weights and all(t == f16 for t in weights)  # the convolution kernels are fp16
    # The fp16 bundle samples the same images as the fp32 one, within fp16's precision.
    fp32 = export_bundle(tiny_checkpoint, tmp_path / "b32")
    assert fp32.fp16_by is None
    a = sample_batch(
        open_model(tmp_path / "b16", "onnxruntime"), [1, 2], ["AD", "AD"], Settings(3, 3.0, "ddim")
    )
    b = sample_batch(
        open_model(tmp_path / "b32", "onnxruntime"), [1, 2], ["AD", "AD"], Settings(3, 3.0, "ddim")
    )
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0


def test_profiles_cover_every_batch_the_loop_sends():
    unet = unet_spec([4, 8, 8], 77, 16).profile([1, 8, 32])
    # guidance 0 or 1 sends the image batch itself (1), guidance above 1 twice it (up to 64)
    assert unet["sample"] == ((1, 4, 8, 8), (16, 4, 8, 8), (64, 4, 8, 8))
    assert unet["timestep"] == ((1,), (16,), (64,))
    assert unet["encoder_hidden_states"][0] == (1, 77, 16)
    decoder = vae_decoder_spec([4, 8, 8], 32).profile([2, 4])
    assert decoder["latent"] == ((2, 4, 8, 8), (4, 4, 8, 8), (4, 4, 8, 8))


def test_a_provider_asked_for_must_be_active():
    check_active(["CPUExecutionProvider"], ["CPUExecutionProvider"], "unet.onnx")
    with pytest.raises(
        SamplingError,
        match=r"unet.onnx: onnxruntime did not activate CUDAExecutionProvider \(active: CPUExecutionProvider\)",
    ):
        check_active(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"], "unet.onnx")


def test_both_onnxruntime_packages_are_refused(monkeypatch):
    from polypsynth.backends import onnxruntime_backend

    monkeypatch.setattr(onnxruntime_backend, "_installed", lambda dist: True)
    with pytest.raises(SamplingError, match="both onnxruntime and onnxruntime-gpu are installed"):
        import_onnxruntime()


def test_backend_options_are_validated():
    assert backend_options("torch", dtype="bf16", compile=None, cuda_graphs=False, providers=()) == {
        "dtype": "bf16"
    }
    assert backend_options("tensorrt", cuda_graphs=True) == {"cuda_graphs": True}
    with pytest.raises(
        SamplingError,
        match="--dtype, --compile do not apply to the onnxruntime backend \\(it takes --provider, --cuda-graphs\\)",
    ):
        backend_options("onnxruntime", dtype="fp16", compile="default")
    with pytest.raises(SamplingError, match="--provider does not apply to the torch backend"):
        backend_options("torch", providers=("cuda",))


def test_torch_backend_options(tiny_checkpoint):
    with pytest.raises(SamplingError, match="cuda_graphs needs a CUDA device; the torch backend runs on cpu"):
        open_model(tiny_checkpoint, "torch", device="cpu", cuda_graphs=True)
    fp32 = sample_batch(open_model(tiny_checkpoint, "torch"), [3], ["AD"], Settings(3, 3.0, "ddim"))
    bf16 = sample_batch(
        open_model(tiny_checkpoint, "torch", dtype="bf16"), [3], ["AD"], Settings(3, 3.0, "ddim")
    )
    assert bf16.shape == fp32.shape and np.abs(bf16.astype(int) - fp32.astype(int)).mean() < 3.0


def test_cli_reaches_backend_options(tiny_checkpoint, tiny_bundle, tmp_path):
    base = ["sample", "--class", "AD", "--count", "1", "--steps", "2"]
    ok = CliRunner().invoke(
        main,
        [*base, "--model", str(tiny_checkpoint), "--backend", "torch", "--dtype", "bf16"]
        + ["--channels-last", "--out", str(tmp_path / "a")],
    )
    assert ok.exit_code == 0, ok.output
    rows = [json.loads(x) for x in (tmp_path / "a" / "AD" / "samples.jsonl").read_text().splitlines()]
    assert rows[0]["backend"] == "torch"
    bad = CliRunner().invoke(
        main, [*base, "--model", str(tiny_bundle), "--dtype", "fp16", "--out", str(tmp_path / "b")]
    )
    assert bad.exit_code != 0
    assert "--dtype does not apply to the onnxruntime backend" in bad.output
    assert not (tmp_path / "b").exists()
    on_cpu = CliRunner().invoke(
        main, [*base, "--model", str(tiny_bundle), "--cuda-graphs", "--out", str(tmp_path / "c")]
    )
    assert on_cpu.exit_code == 1
    assert (
        "--cuda-graphs with the onnxruntime backend needs the CUDA provider first (--provider cuda); the "
        "providers asked for are CPUExecutionProvider" in on_cpu.output
    )
    assert not (tmp_path / "c").exists()


def test_serve_refuses_batches_beyond_the_engines(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"] = {"batch_sizes": [1, 8], "unet": "unet.plan", "vae_decoder": "vae_decoder.plan"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ServeError,
        match=r"--max-batch 32 exceeds the largest batch the bundle's TensorRT engines cover \(8 images\)",
    ):
        SamplerServer({"m": bundle}, ServerOptions(port=0, backend="tensorrt", max_batch=32))


def test_tensorrt_types_map_to_torch_or_fail():
    trt = SimpleNamespace(
        DataType=SimpleNamespace(FLOAT="f", HALF="h", BF16="b", INT32="i", INT64="l", BOOL="?")
    )
    assert torch_dtype(trt, "h") == torch.float16 and torch_dtype(trt, "b") == torch.bfloat16
    assert torch_dtype(trt, "l") == torch.int64 and torch_dtype(trt, "?") == torch.bool
    with pytest.raises(SamplingError, match="TensorRT tensor type x has no torch equivalent here"):
        torch_dtype(trt, "x")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_replay_equals_eager(tiny_checkpoint):
    eager = open_model(tiny_checkpoint, "torch", device="cuda", dtype="fp16")
    graphed = open_model(tiny_checkpoint, "torch", device="cuda", dtype="fp16", cuda_graphs=True)
    for seeds in ([0], [1, 2, 3], [4]):  # a new shape records a graph, a known one replays it
        a = sample_batch(eager, seeds, ["AD"] * len(seeds), Settings(3, 3.0, "dpm++"))
        b = sample_batch(graphed, seeds, ["AD"] * len(seeds), Settings(3, 3.0, "dpm++"))
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert len(graphed.backend._unet.graphs) == 2


def _ort_cuda() -> bool:
    from polypsynth.backends.onnxruntime_backend import import_onnxruntime

    return "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available() or not _ort_cuda(), reason="needs a CUDA device and onnxruntime-gpu"
)
def test_onnxruntime_cuda_graphs_replay_equals_plain_runs(tiny_checkpoint, tmp_path):
    from polypsynth.export.bundle import export_bundle

    export_bundle(tiny_checkpoint, tmp_path / "b", dtype="fp16", optimize="cuda")
    plain = open_model(tmp_path / "b", "onnxruntime", providers=("cuda",))
    graphed = open_model(tmp_path / "b", "onnxruntime", providers=("cuda",), cuda_graphs=True)
    for seeds in ([0], [1, 2, 3], [4], [5, 6, 7]):  # new shapes record, known ones replay
        a = sample_batch(plain, seeds, ["AD"] * len(seeds), Settings(3, 3.0, "dpm++"))
        b = sample_batch(graphed, seeds, ["AD"] * len(seeds), Settings(3, 3.0, "dpm++"))
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert sorted(graphed.backend._graphs) == [
        ("unet", 2),
        ("unet", 6),
        ("vae_decoder", 1),
        ("vae_decoder", 3),
    ]
