"""Training step time on the CPU for the configs/phantom-tiny.yaml model, variants side by side.

    python benchmarks/bench_train.py [--steps 30]

- pretrain stage, batch 16: with and without the latent cache (every image encoded once before the
  loop, or each batch in every step), and with attention heads 4 channels wide (8 heads on 32
  channels, the earlier layout) against the config's 16;
- autoencoder stage, batch 8: whole 64-px images against 32-px crops.

Writes benchmarks/results/train_step.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import write_result  # noqa: E402

CONFIG = Path(__file__).parents[1] / "configs" / "phantom-tiny.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    from polypsynth.config import load_config
    from polypsynth.data.phantom import PhantomPlan, generate_phantom
    from polypsynth.train.recipe import train

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    generate_phantom(
        tmp / "phantom",
        seed=0,
        plan=PhantomPlan(size=64, stage1=256, train=0, test=0, unlabelled=0),
        progress=False,
    )
    stage1 = f"[{{kind: phantom, path: {tmp / 'phantom'}, subset: stage1}}]"
    diffusion = [
        "stage.autoencoder.enabled=false",
        f"stage.pretrain.steps={args.steps}",
        "stage.finetune.steps=0",
        f"stage.pretrain.data={stage1}",
        "train.sample_grid=false",
    ]
    autoencoder = [
        f"stage.autoencoder.steps={args.steps * 2}",
        "stage.autoencoder.batch_size=8",
        f"stage.autoencoder.data={stage1}",
        "stage.pretrain.steps=0",
        "stage.finetune.steps=0",
        "train.sample_grid=false",
    ]
    variants = {
        "pretrain, latent cache, heads 16 wide": ("pretrain", [*diffusion, "train.latent_cache=true"]),
        "pretrain, no latent cache, heads 16 wide": ("pretrain", [*diffusion, "train.latent_cache=false"]),
        "pretrain, latent cache, heads 4 wide": (
            "pretrain",
            [*diffusion, "train.latent_cache=true", "model.tiny.attention_head_dim=4"],
        ),
        "autoencoder, whole 64-px images": ("autoencoder", [*autoencoder, "stage.autoencoder.crop=null"]),
        "autoencoder, 32-px crops": (
            "autoencoder",
            [*autoencoder, "stage.autoencoder.crop=32", "stage.autoencoder.crop_share=1.0"],
        ),
    }
    rows = {}
    for i, (name, (stage, overrides)) in enumerate(variants.items()):
        cfg = load_config(CONFIG, overrides)
        result = train(cfg, tmp / f"run-{i}", progress=False)[stage]
        steps = len(result.losses)
        rows[name] = {
            "stage": stage,
            "steps": steps,
            "batch_size": getattr(cfg.stage, stage).batch_size,
            "seconds_per_step": result.step_seconds / steps,  # the first (slower) step in every run alike
            "setup_seconds": result.setup_seconds,
        }
    per_step = {k: v["seconds_per_step"] for k, v in rows.items()}
    ratios = {
        "cached_over_uncached": per_step["pretrain, latent cache, heads 16 wide"]
        / per_step["pretrain, no latent cache, heads 16 wide"],
        "heads_16_over_4": per_step["pretrain, latent cache, heads 16 wide"]
        / per_step["pretrain, latent cache, heads 4 wide"],
        "crops_over_whole": per_step["autoencoder, 32-px crops"]
        / per_step["autoencoder, whole 64-px images"],
    }
    path = write_result("train_step", {"rows": rows, **ratios})
    print("| variant | batch | s/step | setup s |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['batch_size']} | {row['seconds_per_step']:.3f} | {row['setup_seconds']:.1f} |"
        )
    print("\n" + ", ".join(f"{k}: {v:.2f}" for k, v in ratios.items()) + f"  ({path})")


if __name__ == "__main__":
    main()
