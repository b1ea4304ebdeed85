import json
import shutil

import pytest
import torch

from polypsynth.bundle_format import MANIFEST_VERSION, checkpoint_hash, load_manifest
from polypsynth.errors import SamplingError
from polypsynth.export.bundle import export_bundle
from polypsynth.export.onnx import ExportError, parity
from polypsynth.export.spec import UNetExport, unet_spec
from polypsynth.models import load_components
from polypsynth.sampling.conditioning import Conditioning


def test_manifest_contents(tiny_bundle, tiny_checkpoint):
    import onnx

    m = load_manifest(tiny_bundle)
    assert m.format_version == MANIFEST_VERSION
    assert m.source_hash == checkpoint_hash(tiny_checkpoint)
    assert m.resolution == 32 and m.latent_shape == (4, 8, 8) and m.scaling_factor == 0.5
    assert m.classes == {"AD": "an adenoma", "NON_AD": "a hyperplastic polyp"}
    assert m.scheduler_config["prediction_type"] == "epsilon"
    assert m.dtype == "fp32" and m.opset == 17
    assert set(m.versions) >= {"torch", "onnx", "onnxruntime"}
    for name in ("unet.onnx", "vae_decoder.onnx"):
        onnx.checker.check_model(str(tiny_bundle / name))
        graph = onnx.load(str(tiny_bundle / name)).graph
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch
    cond = Conditioning.load(tiny_bundle / "conditioning.safetensors")
    assert cond.classes == ["AD", "NON_AD"] and cond.embeddings.shape == (2, 77, 16)


def test_manifest_records_each_graphs_inputs_and_outputs_and_the_backend_reads_them(tiny_bundle, tmp_path):
    """The export spec travels in the manifest (names, dtypes, shapes) and ONNX Runtime binds by it;
    a bundle written before it was recorded samples the same images from the rebuilt spec."""
    import onnx

    from polypsynth.sampling.loop import sample_images
    from polypsynth.sampling.model import open_model
    from polypsynth.sampling.request import make_params

    recorded = json.loads((tiny_bundle / "manifest.json").read_text())["components"]
    assert recorded["unet"] == {
        "inputs": [
            {"name": "sample", "shape": ["batch", 4, 8, 8], "kind": "float", "dtype": "fp32"},
            {"name": "timestep", "shape": ["batch"], "kind": "timestep", "dtype": "fp32"},
            {"name": "encoder_hidden_states", "shape": ["batch", 77, 16], "kind": "float", "dtype": "fp32"},
        ],
        "outputs": [{"name": "noise_pred", "shape": ["batch", 4, 8, 8], "kind": "float", "dtype": "fp32"}],
        "batch_multiplier": 2,
    }
    assert recorded["vae_decoder"]["outputs"][0]["shape"] == ["batch", 3, 32, 32]
    for name, spec in recorded.items():  # the graphs' own names are the manifest's
        graph = onnx.load(str(tiny_bundle / f"{name}.onnx")).graph
        assert [i.name for i in graph.input] == [t["name"] for t in spec["inputs"]]
        assert [o.name for o in graph.output] == [t["name"] for t in spec["outputs"]]
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["components"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert load_manifest(old).spec("unet") == load_manifest(tiny_bundle).spec("unet")
    params = make_params("AD", 2, seed=5, steps=2)
    a = sample_images(open_model(tiny_bundle, "onnxruntime"), params)
    b = sample_images(open_model(old, "onnxruntime"), params)
    assert a.shape == (2, 32, 32, 3) and (a == b).all()
    # A manifest that names other tensors than its graph's is refused at load, naming both.
    manifest["components"] = recorded
    manifest["components"]["unet"]["inputs"][2]["name"] = "context"
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        SamplingError, match=r"unet.onnx has inputs \['sample', 'timestep', 'encoder_hidden_states'\]"
    ):
        open_model(old, "onnxruntime")


def test_parity_figures_are_real(tiny_bundle, tiny_checkpoint):
    m = load_manifest(tiny_bundle)
    fig = m.parity["unet"]
    assert 0 < fig["max_abs"] < 1e-3
    components = load_components(tiny_checkpoint)
    spec = unet_spec(m.latent_shape, *m.text_shape)
    again = parity(
        UNetExport(components.unet), spec, tiny_bundle / "unet.onnx", batch=fig["batch"], seed=fig["seed"]
    )
    assert again["max_abs"] == pytest.approx(fig["max_abs"], rel=1e-3)


def test_tampered_or_incompatible_bundle_is_refused(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    data = bytearray((bad / "unet.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bad / "unet.onnx").write_bytes(bytes(data))
    with pytest.raises(SamplingError, match=r"unet.onnx was altered \(sha256 differs from manifest.json\)"):
        load_manifest(bad)
    (bad / "unet.onnx").unlink()
    with pytest.raises(SamplingError, match="is missing unet.onnx"):
        load_manifest(bad)
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 0}))
    with pytest.raises(SamplingError, match="has manifest format_version 0; this polypsynth reads version 1"):
        load_manifest(old)


def test_export_over_tolerance_fails_with_numbers_and_writes_nothing(tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(
        ExportError,
        match=r"unet: ONNX Runtime differs from PyTorch by max_abs=.*max_rel=.*\(tolerance 1e-15 for fp32\); bundle not written",
    ):
        export_bundle(tiny_checkpoint, out, tolerance=1e-15)
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_export_needs_tensorrt(tiny_checkpoint, tmp_path):
    try:
        import tensorrt  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("tensorrt and CUDA exist: the engine build is covered by the GPU benchmark")
    except ImportError:
        pass
    with pytest.raises(ExportError, match="--tensorrt: the tensorrt backend needs"):
        export_bundle(tiny_checkpoint, tmp_path / "trt", tensorrt=True)
    assert not (tmp_path / "trt").exists()


def test_graphs_with_scattered_external_data_are_consolidated(tiny_bundle, tmp_path):
    """What the exporter writes for graphs over 2 GB (one file per tensor) becomes one .data file."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from polypsynth.export.onnx import consolidate_external_data, external_locations

    path = tmp_path / "unet.onnx"
    model = onnx.load(str(tiny_bundle / "unet.onnx"))
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0
    )
    assert len(external_locations(path)) > 10
    consolidate_external_data(path)
    assert external_locations(path) == {"unet.onnx.data"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.onnx", "unet.onnx.data"]
    onnx.checker.check_model(str(path))
    feeds = {
        "sample": np.ones((1, 4, 8, 8), np.float32),
        "timestep": np.array([10.0], np.float32),
        "encoder_hidden_states": np.zeros((1, 77, 16), np.float32),
    }
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    b = ort.InferenceSession(str(tiny_bundle / "unet.onnx"), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )[0]
    assert np.array_equal(a, b)


@pytest.mark.slow
def test_the_dynamo_exporter_gives_the_same_images(tiny_checkpoint, tiny_bundle, tmp_path):
    """`export --exporter dynamo` (torch.export) through the CLI: a bundle that passes parity,
    records its exporter and samples the images the TorchScript-exported bundle samples."""
    import numpy as np
    from click.testing import CliRunner

    from polypsynth.cli import main
    from polypsynth.sampling.loop import sample_images
    from polypsynth.sampling.model import open_model
    from polypsynth.sampling.request import make_params

    out = tmp_path / "dynamo"
    result = CliRunner().invoke(
        main, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--exporter", "dynamo"]
    )
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    assert manifest.exporter == "dynamo" and all(f["max_rel"] < 1e-3 for f in manifest.parity.values())
    params = make_params("AD", 2, seed=3, steps=3)
    dynamo = sample_images(open_model(out, "onnxruntime"), params)
    torchscript = sample_images(open_model(tiny_bundle, "onnxruntime"), params)
    assert dynamo.shape == (2, 32, 32, 3)
    assert np.abs(dynamo.astype(int) - torchscript.astype(int)).max() <= 1
