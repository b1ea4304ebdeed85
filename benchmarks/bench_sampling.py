"""Sampling throughput per backend x batch size x steps.

    python benchmarks/bench_sampling.py            # the demo's tiny model (64 px), CPU
    python benchmarks/bench_sampling.py --sd15     # also one U-Net forward of an SD1.5-size U-Net
                                                   # (random weights from its config, no download)

The tiny model has random weights (throughput does not depend on them). Writes
benchmarks/results/sampling.json and prints markdown tables with onnxruntime / torch ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import sd15_unet, write_result  # noqa: E402

CONFIG = Path(__file__).parents[1] / "configs" / "phantom-tiny.yaml"


def _throughput(model, batch: int, steps: int, repeats: int) -> float:
    from polypsynth.sampling.loop import sample_batch
    from polypsynth.sampling.request import Settings

    seeds = list(range(batch))
    sample_batch(model, seeds, ["AD"] * batch, Settings(steps, 3.0, "dpm++"))  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        sample_batch(model, seeds, ["AD"] * batch, Settings(steps, 3.0, "dpm++"))
    return batch * repeats / (time.perf_counter() - start)


def tiny(batches, steps_list) -> list[dict]:
    from polypsynth.config import load_config
    from polypsynth.export.bundle import export_bundle
    from polypsynth.models import build_tiny, save_components
    from polypsynth.sampling.model import open_model

    cfg = load_config(CONFIG)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sampling-"))
    save_components(build_tiny(cfg.model.tiny, cfg.model.resolution), tmp / "ckpt")
    export_bundle(tmp / "ckpt", tmp / "bundle")
    models = {
        "torch": open_model(tmp / "ckpt", "torch"),
        "onnxruntime": open_model(tmp / "bundle", "onnxruntime"),
    }
    rows = []
    for steps in steps_list:
        for batch in batches:
            row = {"model": "tiny-64px", "steps": steps, "batch": batch}
            for name, model in models.items():
                row[name] = _throughput(model, batch, steps, repeats=1 if batch >= 8 else 3)
            row["ort_over_torch"] = row["onnxruntime"] / row["torch"]
            rows.append(row)
            print(row, flush=True)
    return rows


def sd15_unet_forward() -> dict:
    """Seconds per U-Net forward (batch 2 = one image with guidance) of an SD1.5-size U-Net at 64x64 latents."""
    import torch

    unet = sd15_unet()
    x, t, c = torch.randn(2, 4, 64, 64), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)
    with torch.no_grad():
        unet(x, t, c)
        start = time.perf_counter()
        reference = unet(x, t, c).sample
    seconds = time.perf_counter() - start
    # About 0.80 TFLOP per image per forward at 64x64 latents: batch 2 is 1.6 TFLOP.
    row = {
        "model": "sd15-unet-512px",
        "batch": 2,
        "torch_seconds_per_forward": seconds,
        "torch_tflops": 1.6 / seconds,
    }

    # The same U-Net through the export path (external data: the fp32 graph is 3.4 GB) and ONNX Runtime.
    import numpy as np
    import onnxruntime as ort

    from polypsynth.export.onnx import export_onnx
    from polypsynth.export.spec import UNetExport, unet_spec

    path = Path(tempfile.mkdtemp(prefix="bench-sd15-")) / "unet.onnx"
    start = time.perf_counter()
    export_onnx(UNetExport(unet), unet_spec((4, 64, 64), 77, 768), path)
    row["export_seconds"] = time.perf_counter() - start
    del unet
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": c.numpy()}
    session.run(None, feeds)
    start = time.perf_counter()
    out = session.run(None, feeds)[0]
    row["onnxruntime_seconds_per_forward"] = time.perf_counter() - start
    row["ort_over_torch_speed"] = seconds / row["onnxruntime_seconds_per_forward"]
    row["max_abs_diff"] = float(np.abs(out - reference.numpy()).max())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--steps", default="10,25")
    parser.add_argument("--sd15", action="store_true")
    parser.add_argument("--sd15-only", action="store_true", help="only the SD1.5-size U-Net")
    args = parser.parse_args()
    if args.sd15_only:
        row = sd15_unet_forward()
        print(row)
        write_result("sampling_sd15", row)
        return
    rows = tiny([int(x) for x in args.batches.split(",")], [int(x) for x in args.steps.split(",")])
    payload = {"rows": rows}
    if args.sd15:
        payload["sd15"] = sd15_unet_forward()
    path = write_result("sampling", payload)
    print("\n| model | steps | batch | torch img/s | onnxruntime img/s | ORT / torch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['steps']} | {r['batch']} | {r['torch']:.2f} | {r['onnxruntime']:.2f} | {r['ort_over_torch']:.2f} |"
        )
    if args.sd15:
        s = payload["sd15"]
        print(
            f"\nSD1.5-size U-Net, batch 2 (one guided image), CPU: torch {s['torch_seconds_per_forward']:.2f} s, "
            f"onnxruntime {s['onnxruntime_seconds_per_forward']:.2f} s per forward "
            f"(ORT / torch speed {s['ort_over_torch_speed']:.2f}, max abs diff {s['max_abs_diff']:.1e})"
        )
    print(f"\n({path})")


if __name__ == "__main__":
    main()
