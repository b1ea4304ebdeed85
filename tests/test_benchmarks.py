"""The GPU benchmark script cannot rot: its FLOP count matches the SD1.5 figures, and a smoke run
on the CPU goes through the same code (torch and ONNX Runtime variants) and writes its table."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCH = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import gpu_sampling  # noqa: E402


def test_sd15_flops_match_the_published_figures():
    with torch.device("meta"):
        components = SimpleNamespace(unet=common.sd15_unet(), vae=common.sd15_vae())
    unet, vae = gpu_sampling.count_flops(components)
    assert unet / 1e12 == pytest.approx(0.80, abs=0.02)  # per image per U-Net forward at 64x64 latents
    assert vae / 1e12 == pytest.approx(2.5, abs=0.1)  # per 512x512 decode


def test_peak_lookup_prefers_the_specific_name():
    assert gpu_sampling.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_sampling.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_sampling.peak_tflops("Some CPU") is None


def test_cpu_smoke_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    payload = gpu_sampling.main(
        ["--model", "tiny", "--device", "cpu", "--variants", "fp32-eager,onnxruntime", "--batch", "2"]
        + ["--images", "2", "--steps", "2"]
    )
    rows = {r["variant"]: r for r in payload["rows"]}
    assert set(rows) == {"fp32-eager", "onnxruntime"}
    for r in rows.values():
        assert "error" not in r, r
        assert r["images_per_s"] > 0 and r["std_of_last_batch"] > 1  # real images, not a flat colour
    assert rows["fp32-eager"]["speedup_over_fp32-eager"] == 1.0
    assert payload["tflop_per_image"] == pytest.approx(
        2 * 2 * payload["unet_tflop_per_forward"] + payload["vae_tflop_per_decode"]
    )
    saved = json.loads((tmp_path / "gpu_sampling.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(payload["rows"]))
    out = capsys.readouterr().out
    assert "| variant | images/s | × fp32-eager |" in out and "| onnxruntime |" in out


def test_unknown_variant_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_sampling.main(["--device", "cpu", "--variants", "fp8-magic"])
    assert "unknown variants ['fp8-magic']" in capsys.readouterr().err
