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
    """diffusers' own pipeline, polypsynth's loop and the ONNX bundle on one tiny model: the same
    seeds give the same images (the pipeline is an independent reference of the loop)."""
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    payload = gpu_sampling.main(
        ["--model", "tiny", "--device", "cpu", "--variants", "diffusers,fp32-eager,onnxruntime"]
        + ["--batch", "1,2", "--images", "2", "--steps", "3"]
    )
    rows = {(r["variant"], r["batch"]): r for r in payload["rows"]}
    assert set(rows) == {(v, b) for v in ("diffusers", "fp32-eager", "onnxruntime") for b in (1, 2)}
    for r in rows.values():
        assert "error" not in r, r
        assert r["images_per_s"] > 0 and r["image_std"] > 1  # real images, not a flat colour
        assert r["rounds"] >= 3 and r["spread"] >= 0
    assert payload["baseline"] == "diffusers" and rows[("diffusers", 2)]["speedup"] == 1.0
    assert rows[("diffusers", 1)]["mean_abs_diff_uint8"] == 0.0
    for v in ("fp32-eager", "onnxruntime"):  # fp16 pipeline vs fp32 loop: within fp16's precision
        assert 0 < rows[(v, 2)]["mean_abs_diff_uint8"] < 1.0 and rows[(v, 2)]["p99_abs_diff_uint8"] <= 2
    assert payload["tflop_per_image"] == pytest.approx(
        3 * 2 * payload["unet_tflop_per_forward"] + payload["vae_tflop_per_decode"]
    )
    saved = json.loads((tmp_path / "gpu_sampling.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(payload["rows"]))
    out = capsys.readouterr().out
    assert "| variant | batch | images/s (spread) | × diffusers |" in out and "| onnxruntime | 2 |" in out


def test_gpu_check_cpu_smoke_run(tmp_path, monkeypatch, capsys):
    import gpu_check

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    report = gpu_check.main(
        ["--device", "cpu", "--model", "tiny", "--batch", "1", "--steps", "2", "--images", "1"]
        + ["--eval-images", "12", "--eval-epochs", "1"]
    )
    checks = report["checks"]
    assert checks["race"] == {"skipped": "needs a CUDA device"}
    assert "CUDA provider comes with onnxruntime-gpu" in checks["providers"]["cuda"]["refused"]
    assert checks["nan"]["ok"] and checks["nan"]["export_left_nothing"]
    assert checks["fp16_export"]["ok"] and checks["fp16_export"]["dtype"] == "fp32"  # fp16 needs a GPU
    assert {r["variant"] for r in report["benchmark"]["rows"]} == {"fp32-eager", "onnxruntime"}
    assert report["goals"]["images_agree"]["met"]
    ev = checks["evaluate"]  # the same code path as on a GPU, device and CPU both "cpu" here
    assert ev["ok"] and ev["images"] == 12 and ev["efficientnet"]["max_rel_diff_vs_cpu"] == 0.0
    assert set(ev["classifier"]) == {"cpu", "speedup"} and 0 <= ev["classifier"]["cpu"]["test_accuracy"] <= 1
    assert json.loads((tmp_path / "gpu_check.json").read_text())["checks"]["nan"]["ok"]
    assert "checks: tiny_export ok, providers ok, nan ok, race needs a CUDA device" in capsys.readouterr().out


def test_goals_are_judged_against_the_noise():
    import gpu_check

    def row(variant, batch, ips, spread=0.01, frac=None, diff=0.1):
        r = {
            "variant": variant,
            "batch": batch,
            "images_per_s": ips,
            "spread": spread,
            "mean_abs_diff_uint8": diff,
        }
        return r | ({"fraction_of_peak": frac} if frac is not None else {})

    bench = {
        "rows": [
            row("diffusers", 1, 1.0),
            row("diffusers", 8, 6.0, frac=0.25),
            row("fp16-eager", 8, 5.95, frac=0.248),  # within the noise: not slower
            row("bf16-eager", 8, 5.0, frac=0.21),  # 17% below: slower
            row("fp16-cuda-graphs", 1, 3.0),
            row("fp16-compile", 8, 8.0, frac=0.35, diff=2.5),
            row("onnxruntime-optimized", 8, 7.2, frac=0.3),  # 1.2x: short of 1.3x
            row("onnxruntime-optimized-cuda-graphs", 1, 2.6),  # 2.6x: past 2.5x
        ]
    }
    goals = gpu_check.judge_goals(bench)
    assert goals["best_fraction_of_peak_at_8"] == {
        "variant": "fp16-compile",
        "value": 0.35,
        "goal": 0.5,
        "met": False,
    }
    assert goals["onnxruntime_optimized_over_diffusers_at_8"] == {
        "variant": "onnxruntime-optimized",
        "value": pytest.approx(1.2),
        "goal": 1.3,
        "met": False,
    }
    assert goals["onnxruntime_cuda_graphs_over_diffusers_at_1"]["met"]
    assert goals["onnxruntime_cuda_graphs_over_diffusers_at_1"]["value"] == pytest.approx(2.6)
    assert (
        goals["best_speedup_over_diffusers_at_1"]["value"] == 3.0
        and goals["best_speedup_over_diffusers_at_1"]["met"]
    )
    assert goals["no_variant_slower_than_diffusers_at_8"] == {"slower": {"bf16-eager": 0.833}, "met": False}
    assert goals["images_agree"] == {"worst_variant": "fp16-compile", "value": 2.5, "goal": 2.0, "met": False}


def test_unknown_variant_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_sampling.main(["--device", "cpu", "--variants", "fp8-magic"])
    assert "unknown variants ['fp8-magic']" in capsys.readouterr().err
