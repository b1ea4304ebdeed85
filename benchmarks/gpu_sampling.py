"""GPU sampling throughput: an SD1.5-size model at 512x512, 25 DPM++ steps with classifier-free
guidance 7.5, one row per variant and batch size, every variant on fresh copies of the same weights.

    python benchmarks/gpu_sampling.py                          # every variant this machine can run
    python benchmarks/gpu_sampling.py --variants diffusers,fp16-cuda-graphs --batch 1,8
    python benchmarks/gpu_sampling.py --model tiny --device cpu --variants fp32-eager,onnxruntime \
        --batch 2 --images 2 --steps 2                         # the smoke run of the test suite

Variants (the first one measured is the baseline of every ratio and image comparison):
    diffusers                diffusers' own StableDiffusionPipeline in fp16 with SDPA attention, given the
                             same scheduler, steps, guidance, prompt_embeds and initial latents: what a
                             diffusers user runs
    fp16-eager               polypsynth's loop over the torch backend, fp16, SDPA
    fp16-cuda-graphs         + the U-Net and decoder recorded as CUDA graphs per batch size
    bf16-eager               bf16 weights and activations (channels_last is left to the compiled
                             variants: in eager mode it slowed batch 8 by 8% on an H200)
    fp16-compile             fp16, channels_last, torch.compile (Inductor kernels and fusion)
    fp16-compile-cudagraphs  + torch.compile(mode="reduce-overhead"): Inductor with CUDA graphs
    onnxruntime              the fp16 bundle through ONNX Runtime's CUDA provider (onnxruntime-gpu)
    tensorrt                 the bundle's TensorRT engines (strongly typed, fp16)
    tensorrt-cuda-graphs     + CUDA graphs
    fp32-eager               torch fp32 (the CPU smoke run)

Weights are random, built once from the SD1.5 configs with a fixed seed (throughput does not depend
on them; nothing is downloaded); each variant gets its own copy, so none sees another's casts. The
bundle variants share one export. FLOPs per U-Net forward and per VAE decode are counted with
torch's FlopCounterMode (SD1.5 at 512x512: 0.80 TFLOP per image per U-Net forward, 2.5 per decode,
42.7 per image), so the fraction of the compute floor is images/s x FLOP per image / peak FLOP/s.
Each row also says how far its images are from the baseline's (mean |difference| in uint8 levels,
same seeds) and how long its warm-up took (compilation, graph capture, autotuning).
Writes benchmarks/results/gpu_sampling.json (after every row) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import sd15_unet, sd15_vae, write_result  # noqa: E402

STEPS, GUIDANCE, SCHEDULER = 25, 7.5, "dpm++"
TORCH_VARIANTS = {
    "fp16-eager": {"dtype": "fp16"},
    "fp16-cuda-graphs": {"dtype": "fp16", "cuda_graphs": True},
    "bf16-eager": {"dtype": "bf16"},
    "fp16-compile": {"dtype": "fp16", "channels_last": True, "compile": True},
    "fp16-compile-cudagraphs": {"dtype": "fp16", "channels_last": True, "compile": "reduce-overhead"},
    "fp32-eager": {"dtype": "fp32"},
}
# variant -> (backend, its options, the bundle's optimisation: export --optimize)
BUNDLE_VARIANTS = {
    "onnxruntime": ("onnxruntime", {"providers": ("cuda",)}, "none"),
    "onnxruntime-optimized": ("onnxruntime", {"providers": ("cuda",)}, "cuda"),
    "onnxruntime-optimized-cuda-graphs": (
        "onnxruntime",
        {"providers": ("cuda",), "cuda_graphs": True},
        "cuda",
    ),
    "tensorrt": ("tensorrt", {}, "none"),
    "tensorrt-cuda-graphs": ("tensorrt", {"cuda_graphs": True}, "none"),
}
VARIANTS = ("diffusers", *TORCH_VARIANTS, *BUNDLE_VARIANTS)
# Cheap variants first, compilation last: a time limit then cuts the costly ones.
GPU_DEFAULT = (
    "diffusers",
    "fp16-eager",
    "fp16-cuda-graphs",
    "bf16-eager",
    *BUNDLE_VARIANTS,
    "fp16-compile",
    "fp16-compile-cudagraphs",
)

# Time a torch.compile variant needs per batch size (Inductor compiles each shape anew).
COMPILE_WARMUP_S = 100.0

# Dense fp16/bf16 tensor-core peaks in TFLOP/s (vendor data sheets), matched on the device name.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "RTX 4090": 165.0,
}


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():  # longest names first where they share a prefix
        if key in device_name:
            return value
    return None


def build_components(model: str, seed: int = 0):
    """Components in polypsynth's format: SD1.5-size U-Net and VAE, or the demo's tiny model."""
    import torch

    from polypsynth.config import TinyModelConfig
    from polypsynth.models import build_tiny

    if model == "tiny":
        return build_tiny(TinyModelConfig(), resolution=64, seed=seed)
    components = build_tiny(
        TinyModelConfig(text_hidden_size=768, text_layers=1, text_heads=12), resolution=64, seed=seed
    )
    torch.manual_seed(seed)
    components.unet, components.vae = sd15_unet(), sd15_vae()
    return components


def count_flops(components, batch: int = 1) -> tuple[float, float]:
    """FLOPs of one U-Net forward and one VAE decode per image, counted by torch's FlopCounterMode
    on copies built from the models' configs on the meta device (no memory, no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = type(components.unet).from_config(components.unet.config).eval()
        vae = type(components.vae).from_config(components.vae.config).eval()
        c = unet.config
        x = torch.randn(batch, c.in_channels, c.sample_size, c.sample_size)
        t = torch.full((batch,), 500.0)
        ctx = torch.randn(batch, 77, c.cross_attention_dim)
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                unet(x, t, ctx)
            unet_flops = counter.get_total_flops() / batch
            with FlopCounterMode(display=False) as counter:
                vae.decode(x)
            vae_flops = counter.get_total_flops() / batch
    return unet_flops, vae_flops


class DiffusersPipelineSampler:
    """diffusers' StableDiffusionPipeline, fp16, SDPA, as a user runs it; the same scheduler,
    conditioning and initial noise as polypsynth's loop, so the images are comparable."""

    def __init__(self, components, conditioning, device: str):
        import torch
        from diffusers.models.attention_processor import AttnProcessor2_0

        from polypsynth.models.loading import latent_shape
        from polypsynth.sampling.schedulers import make_scheduler

        scheduler = make_scheduler(SCHEDULER, dict(components.scheduler.config))
        self.pipe = components.pipeline(scheduler).to(device, torch.float16)
        self.pipe.unet.set_attn_processor(AttnProcessor2_0())
        self.pipe.vae.set_attn_processor(AttnProcessor2_0())
        self.pipe.set_progress_bar_config(disable=True)
        self.conditioning, self.device = conditioning, device
        self.latent_shape = latent_shape(components)

    def __call__(self, seeds, class_name: str, steps: int, guidance: float) -> np.ndarray:
        import torch

        from polypsynth.sampling.seeds import initial_noise

        n = len(seeds)
        cond = self.conditioning.of(class_name).expand(n, -1, -1)
        uncond = self.conditioning.unconditional.expand(n, -1, -1)
        fp16 = {"device": self.device, "dtype": torch.float16}
        images = self.pipe(
            prompt_embeds=cond.to(**fp16),
            negative_prompt_embeds=uncond.to(**fp16),
            latents=initial_noise(seeds, self.latent_shape).to(**fp16),
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="pt",
        ).images
        return (images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class LoopSampler:
    """polypsynth's own loop over a SamplerModel (any backend)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, seeds, class_name: str, steps: int, guidance: float) -> np.ndarray:
        from polypsynth.sampling.loop import sample_batch
        from polypsynth.sampling.request import Settings

        return sample_batch(
            self.model, seeds, [class_name] * len(seeds), Settings(steps, guidance, SCHEDULER)
        )


def bundle_available(variant: str) -> str | None:
    """None when this machine can run a bundle variant, else the reason it cannot."""
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if BUNDLE_VARIANTS[variant][0] == "onnxruntime":
        from polypsynth.backends.onnxruntime_backend import PROVIDERS, import_onnxruntime

        try:
            available = import_onnxruntime().get_available_providers()
        except Exception as exc:  # missing or doubly installed
            return str(exc)
        if PROVIDERS["cuda"] not in available:
            return (
                f"ONNX Runtime here has no CUDA provider (providers: {', '.join(available)}); "
                "it comes with onnxruntime-gpu"
            )
        return None
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            "TensorRT is not installed here: its libraries come only from NVIDIA's package index "
            "(pip install tensorrt-cu13 --extra-index-url https://pypi.nvidia.com), not from PyPI alone"
        )
    return None


def export_once(
    components, workdir: Path, tensorrt: bool, batch_sizes, dtype: str, optimize: str = "none"
) -> Path:
    """The bundle of one optimisation that its variants share (exported on first need): the plain
    one (with the TensorRT engines) in bundle/, the CUDA-optimised one in bundle-cuda/."""
    from polypsynth.export.bundle import export_bundle
    from polypsynth.models import save_components

    checkpoint = workdir / "checkpoint"
    bundle = workdir / ("bundle" if optimize == "none" else f"bundle-{optimize}")
    if not checkpoint.is_dir():
        save_components(components, checkpoint)
    if not bundle.is_dir():
        export_bundle(
            checkpoint,
            bundle,
            dtype=dtype,
            tensorrt=tensorrt and optimize == "none",
            batch_sizes=batch_sizes,
            optimize=optimize,
        )
    return bundle


def open_variant(name: str, components, conditioning, device: str, workdir: Path, batches, wants_trt):
    from polypsynth.sampling.model import model_from_components, open_model

    if name == "diffusers":
        return DiffusersPipelineSampler(copy.deepcopy(components), conditioning, device)
    if name in TORCH_VARIANTS:
        model = model_from_components(
            copy.deepcopy(components), conditioning, name, workdir, device=device, **TORCH_VARIANTS[name]
        )
        return LoopSampler(model)
    on_gpu = device.startswith("cuda")
    if on_gpu and (reason := bundle_available(name)):
        raise RuntimeError(reason)
    dtype = "fp16" if on_gpu else "fp32"
    backend, options, optimize = BUNDLE_VARIANTS[name]
    if not on_gpu and optimize != "none":
        raise RuntimeError(f"an --optimize {optimize} bundle needs onnxruntime's CUDA provider")
    bundle = export_once(components, workdir, wants_trt and on_gpu, batches, dtype, optimize)
    if not on_gpu:
        options = {"providers": ("cpu",)} if backend == "onnxruntime" else options
    return LoopSampler(open_model(bundle, backend, **options))


def measure(
    sampler, batch: int, images: int, steps: int, sync, min_rounds: int = 3
) -> tuple[dict, np.ndarray]:
    """Two warm-up batches (compilation, graph capture, autotuning), then at least `min_rounds`
    timed batches, each timed alone: images/s comes from the median batch time and `spread` is
    (slowest - fastest) / median, the noise a comparison must exceed. Returns the figures and the
    images of seeds 0..batch-1 (compared across variants)."""
    seeds = list(range(batch))
    start = time.perf_counter()
    first = sampler(seeds, "AD", steps, GUIDANCE)
    sampler(seeds, "AD", steps, GUIDANCE)
    sync()
    warmup = time.perf_counter() - start
    times = []
    for r in range(max(min_rounds, images // batch)):
        start = time.perf_counter()
        out = sampler([s + r * batch for s in seeds], "AD", steps, GUIDANCE)
        sync()
        times.append(time.perf_counter() - start)
    assert out.shape[0] == batch and out.dtype == np.uint8, out.shape
    median = float(np.median(times))
    return {
        "images_per_s": batch / median,
        "spread": (max(times) - min(times)) / median,
        "rounds": len(times),
        "warmup_s": warmup,
        "image_std": float(first.std()),
    }, first


def run(
    names,
    batches,
    *,
    model: str = "sd15",
    device: str = "cuda",
    images: int = 16,
    steps: int = STEPS,
    peak: float | None = None,
    workdir: Path,
    result: str = "gpu_sampling",
    deadline: float | None = None,
    components=None,
    baseline_images: dict | None = None,
    payload: dict | None = None,
) -> dict:
    """Measure `names` at each batch size in `batches`; write the JSON after every row. A later
    call may continue an earlier one's `payload` and `baseline_images` (same model and batches)."""
    import torch

    from polypsynth.sampling.conditioning import compute_conditioning

    on_gpu = device.startswith("cuda")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    device_name = torch.cuda.get_device_name(0) if on_gpu else "CPU"
    components = components or build_components(model)
    conditioning = compute_conditioning(components)
    unet_flops, vae_flops = count_flops(components)
    flops_per_image = steps * 2 * unet_flops + vae_flops  # guidance: two U-Net passes per step
    print(
        f"{model} on {device_name}: {unet_flops / 1e12:.3f} TFLOP per U-Net forward, "
        f"{vae_flops / 1e12:.3f} TFLOP per VAE decode, {flops_per_image / 1e12:.2f} TFLOP per image",
        flush=True,
    )
    payload = payload or {
        "model": model,
        "device": device_name,
        "batches": list(batches),
        "steps": steps,
        "guidance": GUIDANCE,
        "scheduler": SCHEDULER,
        "unet_tflop_per_forward": unet_flops / 1e12,
        "vae_tflop_per_decode": vae_flops / 1e12,
        "tflop_per_image": flops_per_image / 1e12,
        "peak_tflops": peak,
        "baseline": None,
        "rows": [],
    }
    baseline_images = {} if baseline_images is None else baseline_images
    wants_trt = any(BUNDLE_VARIANTS.get(n, ("",))[0] == "tensorrt" for n in names)
    for name in names:
        needs = COMPILE_WARMUP_S * len(batches) if "compile" in name and on_gpu else 0.0
        if deadline is not None and time.monotonic() + needs > deadline:
            payload["rows"].append(
                {"variant": name, "error": f"skipped: less than {needs:.0f} s of the run's time limit left"}
            )
            continue
        try:
            start = time.perf_counter()
            sampler = open_variant(name, components, conditioning, device, workdir, batches, wants_trt)
            load_s = time.perf_counter() - start
        except Exception as exc:  # a variant this machine cannot run is a row that says why
            payload["rows"].append({"variant": name, "error": _reason(exc)})
            print(payload["rows"][-1], flush=True)
            continue
        for batch in batches:
            row = {"variant": name, "batch": batch, "load_s": load_s}
            try:
                figures, imgs = measure(sampler, batch, images, steps, sync)
                row.update(figures)
                row["achieved_tflops"] = row["images_per_s"] * flops_per_image / 1e12
                if peak:
                    row["fraction_of_peak"] = row["achieved_tflops"] / peak
                if batch not in baseline_images:
                    baseline_images[batch] = imgs
                    payload["baseline"] = payload["baseline"] or name
                diff = np.abs(imgs.astype(np.int16) - baseline_images[batch].astype(np.int16))
                row["mean_abs_diff_uint8"] = float(diff.mean())
                row["p99_abs_diff_uint8"] = float(np.percentile(diff, 99))
            except Exception as exc:
                row["error"] = _reason(exc)
            payload["rows"].append(row)
            print(row, flush=True)
            write_result(result, payload)
        del sampler
        if on_gpu:
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    add_speedups(payload)
    write_result(result, payload)
    return payload


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def add_speedups(payload: dict) -> None:
    """Images/s of each row over the baseline's at the same batch size."""
    base = {
        r["batch"]: r["images_per_s"]
        for r in payload["rows"]
        if r["variant"] == payload["baseline"] and "images_per_s" in r
    }
    for r in payload["rows"]:
        if "images_per_s" in r and r["batch"] in base:
            r["speedup"] = r["images_per_s"] / base[r["batch"]]


def table(payload: dict) -> str:
    lines = [
        f"| variant | batch | images/s (spread) | × {payload['baseline']} | TFLOP/s | of peak | mean abs Δ (uint8) | warm-up s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        if "images_per_s" not in r:
            lines.append(f"| {r['variant']} | {r.get('batch', '—')} | — | — | — | — | — | {r['error']} |")
            continue
        frac = f"{r['fraction_of_peak']:.1%}" if "fraction_of_peak" in r else "—"
        lines.append(
            f"| {r['variant']} | {r['batch']} | {r['images_per_s']:.2f} ({r['spread']:.0%}) | {r.get('speedup', float('nan')):.2f} | "
            f"{r['achieved_tflops']:.3g} | {frac} | {r['mean_abs_diff_uint8']:.2f} | {r['warmup_s']:.1f} |"
        )
    return "\n".join(lines)


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def run_parser(doc: str, default_variants) -> argparse.ArgumentParser:
    """The options of a benchmark run, shared by this script and gpu_check.py."""
    import torch

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", help=f"comma-separated; default on a GPU: {','.join(default_variants)}")
    parser.add_argument(
        "--batch", type=parse_batches, default=[1, 8], help="image batch sizes (the U-Net runs on 2x)"
    )
    parser.add_argument("--images", type=int, default=16, help="images timed per variant and batch size")
    parser.add_argument("--steps", type=int, default=STEPS)
    return parser


def main(argv=None) -> dict:
    import torch

    parser = run_parser(__doc__, GPU_DEFAULT)
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's dense fp16/bf16 peak (default: looked up)"
    )
    parser.add_argument("--time-limit", type=float, help="seconds; variants not started by then are skipped")
    parser.add_argument(
        "--result", default="gpu_sampling", help="name of the JSON file in benchmarks/results"
    )
    args = parser.parse_args(argv)

    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device (use --device cpu for a smoke run)")
    names = args.variants.split(",") if args.variants else list(GPU_DEFAULT if on_gpu else ("fp32-eager",))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    peak = args.peak_tflops or (peak_tflops(torch.cuda.get_device_name(0)) if on_gpu else None)
    deadline = time.monotonic() + args.time_limit if args.time_limit else None
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        payload = run(
            names,
            args.batch,
            model=args.model,
            device=args.device,
            images=args.images,
            steps=args.steps,
            peak=peak,
            workdir=Path(tmp),
            result=args.result,
            deadline=deadline,
        )
    print("\n" + table(payload))
    return payload


if __name__ == "__main__":
    main()
