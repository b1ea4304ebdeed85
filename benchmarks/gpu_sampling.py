"""GPU sampling throughput: an SD1.5-size model at 512x512, 25 DPM++ steps with classifier-free
guidance, through polypsynth's own sampling loop and backends, one row per variant.

    python benchmarks/gpu_sampling.py                          # every variant this machine can run
    python benchmarks/gpu_sampling.py --variants fp16-eager,bf16-compile --batch 8
    python benchmarks/gpu_sampling.py --model tiny --device cpu --variants fp32-eager,onnxruntime \
        --batch 2 --images 2 --steps 2                         # the smoke run of the test suite

Variants (the first one run is the baseline of every ratio):
    fp16-eager               torch fp16, diffusers' default attention (SDPA): what a diffusers user gets
    bf16-channels-last       bf16 weights and activations, SDPA, channels_last memory format
    bf16-compile             + torch.compile (default mode: Inductor kernels and fusion)
    bf16-compile-cudagraphs  + torch.compile(mode="reduce-overhead"): CUDA graphs, no launch overhead
    onnxruntime              the exported bundle (fp16 on CUDA) through ONNX Runtime's CUDA provider
    tensorrt                 the bundle's TensorRT engines (fp16) with CUDA graphs
    fp32-eager               torch fp32 (the CPU reference)

Weights are random, built from the SD1.5 configs (throughput does not depend on them; nothing is
downloaded). FLOPs per U-Net forward and per VAE decode are counted with torch's FlopCounterMode
on this model (SD1.5 at 512x512: about 0.80 TFLOP per image per U-Net forward and 2.5 TFLOP per
decode), so the fraction of the compute floor is images/s x FLOP per image / peak FLOP/s.
Writes benchmarks/results/gpu_sampling.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import sd15_unet, sd15_vae, write_result  # noqa: E402

TORCH_VARIANTS = {
    "fp16-eager": {"dtype": "fp16"},
    "bf16-channels-last": {"dtype": "bf16", "channels_last": True},
    "bf16-compile": {"dtype": "bf16", "channels_last": True, "compile": True},
    "bf16-compile-cudagraphs": {"dtype": "bf16", "channels_last": True, "compile": "reduce-overhead"},
    "fp32-eager": {"dtype": "fp32"},
}
BUNDLE_VARIANTS = ("onnxruntime", "tensorrt")
GPU_DEFAULT = (*[v for v in TORCH_VARIANTS if v != "fp32-eager"], *BUNDLE_VARIANTS)

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


def build_components(model: str):
    """Components in polypsynth's format: SD1.5-size U-Net and VAE, or the demo's tiny model."""
    from polypsynth.config import TinyModelConfig
    from polypsynth.models import build_tiny

    if model == "tiny":
        return build_tiny(TinyModelConfig(), resolution=64)
    components = build_tiny(
        TinyModelConfig(text_hidden_size=768, text_layers=1, text_heads=12), resolution=64
    )
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


def open_variant(name: str, components, conditioning, device: str, workdir: Path):
    from polypsynth.models import save_components
    from polypsynth.sampling.model import model_from_components, open_model

    if name in TORCH_VARIANTS:
        return model_from_components(
            components, conditioning, name, workdir, device=device, **TORCH_VARIANTS[name]
        )
    from polypsynth.export.bundle import export_bundle

    on_gpu = device.startswith("cuda")
    checkpoint = workdir / "checkpoint"
    if not checkpoint.is_dir():
        save_components(components, checkpoint)
    bundle = workdir / f"bundle-{name}"
    if not bundle.is_dir():
        export_bundle(
            checkpoint,
            bundle,
            dtype="fp16" if on_gpu else "fp32",
            tensorrt=name == "tensorrt",
            batch_sizes=(1, 8),
        )
    if name == "onnxruntime":
        return open_model(bundle, "onnxruntime", providers=("cuda",) if on_gpu else ("cpu",))
    return open_model(bundle, "tensorrt")


def measure(model, batch: int, images: int, steps: int, sync) -> dict:
    from polypsynth.sampling.loop import sample_batch

    seeds = list(range(batch))
    start = time.perf_counter()
    sample_batch(model, seeds, ["AD"] * batch, steps, 7.5, "dpm++")  # warm-up: compilation, autotuning
    sample_batch(model, seeds, ["AD"] * batch, steps, 7.5, "dpm++")  # CUDA-graph capture settles here
    sync()
    warmup = time.perf_counter() - start
    rounds = max(1, images // batch)
    start = time.perf_counter()
    for r in range(rounds):
        out = sample_batch(model, [s + r * batch for s in seeds], ["AD"] * batch, steps, 7.5, "dpm++")
    sync()
    seconds = time.perf_counter() - start
    assert out.shape[0] == batch and out.dtype.name == "uint8", out.shape
    return {
        "images_per_s": rounds * batch / seconds,
        "warmup_s": warmup,
        "std_of_last_batch": float(out.std()),
    }


def main(argv=None) -> dict:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", help=f"comma-separated; default on a GPU: {','.join(GPU_DEFAULT)}")
    parser.add_argument("--batch", type=int, default=4, help="images per batch (the U-Net runs on 2x)")
    parser.add_argument("--images", type=int, default=16, help="images timed per variant")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's dense fp16/bf16 peak (default: looked up)"
    )
    parser.add_argument(
        "--result", default="gpu_sampling", help="name of the JSON file in benchmarks/results"
    )
    args = parser.parse_args(argv)

    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device (use --device cpu for a smoke run)")
    names = args.variants.split(",") if args.variants else list(GPU_DEFAULT if on_gpu else ("fp32-eager",))
    unknown = [n for n in names if n not in TORCH_VARIANTS and n not in BUNDLE_VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join([*TORCH_VARIANTS, *BUNDLE_VARIANTS])}")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    device_name = torch.cuda.get_device_name(0) if on_gpu else "CPU"
    peak = args.peak_tflops or (peak_tflops(device_name) if on_gpu else None)

    from polypsynth.sampling.conditioning import compute_conditioning

    components = build_components(args.model)
    conditioning = compute_conditioning(components)
    unet_flops, vae_flops = count_flops(components)
    flops_per_image = args.steps * 2 * unet_flops + vae_flops  # guidance: two U-Net passes per step
    print(
        f"{args.model} on {device_name}: {unet_flops / 1e12:.3f} TFLOP per U-Net forward, "
        f"{vae_flops / 1e12:.3f} TFLOP per VAE decode, {flops_per_image / 1e12:.2f} TFLOP per image",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for name in names:
            row = {"variant": name}
            try:
                model = open_variant(name, components, conditioning, args.device, Path(tmp))
                row.update(measure(model, args.batch, args.images, args.steps, sync))
                del model
            except Exception as exc:  # a variant this machine cannot run is a row that says why
                row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            if on_gpu:
                torch.cuda.empty_cache()
                torch._dynamo.reset()
            if "images_per_s" in row:
                row["achieved_tflops"] = row["images_per_s"] * flops_per_image / 1e12
                if peak:
                    row["fraction_of_peak"] = row["achieved_tflops"] / peak
            rows.append(row)
            print(row, flush=True)
    measured = [r for r in rows if "images_per_s" in r]
    if measured:
        base = measured[0]["images_per_s"]
        for r in measured:
            r["speedup_over_" + measured[0]["variant"]] = r["images_per_s"] / base
    payload = {
        "model": args.model,
        "device": device_name,
        "batch": args.batch,
        "steps": args.steps,
        "guidance": 7.5,
        "unet_tflop_per_forward": unet_flops / 1e12,
        "vae_tflop_per_decode": vae_flops / 1e12,
        "tflop_per_image": flops_per_image / 1e12,
        "peak_tflops": peak,
        "rows": rows,
    }
    path = write_result(args.result, payload)
    base_name = measured[0]["variant"] if measured else "-"
    print(f"\n| variant | images/s | × {base_name} | TFLOP/s | of peak | warm-up s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | — | — | — | — | {r['error']} |")
            continue
        frac = f"{r['fraction_of_peak']:.1%}" if "fraction_of_peak" in r else "—"
        print(
            f"| {r['variant']} | {r['images_per_s']:.2f} | {r['speedup_over_' + base_name]:.2f} | "
            f"{r['achieved_tflops']:.3g} | {frac} | {r['warmup_s']:.0f} |"
        )
    print(f"\n({path})")
    return payload


if __name__ == "__main__":
    main()
