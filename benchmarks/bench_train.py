"""Training step time with and without the latent cache (configs/phantom-tiny.yaml model, CPU).

    python benchmarks/bench_train.py [--steps 30]

Both runs train the same pretrain stage on the same phantom data; the cached run encodes every
image with the VAE once before the loop, the uncached one encodes each batch in every step.
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
    rows = {}
    for cached in (True, False):
        overrides = [
            "stage.autoencoder.enabled=false",
            f"stage.pretrain.steps={args.steps}",
            "stage.finetune.steps=0",
            f"stage.pretrain.data=[{{kind: phantom, path: {tmp / 'phantom'}, subset: stage1}}]",
            f"train.latent_cache={str(cached).lower()}",
            "train.sample_grid=false",
        ]
        cfg = load_config(CONFIG, overrides)
        result = train(cfg, tmp / f"run-{cached}", progress=False)["pretrain"]
        warm = result.step_seconds  # includes the first (slower) step in both runs alike
        rows["cached" if cached else "uncached"] = {
            "steps": args.steps,
            "batch_size": cfg.stage.pretrain.batch_size,
            "seconds_per_step": warm / args.steps,
            "setup_seconds": result.setup_seconds,
        }
    ratio = rows["cached"]["seconds_per_step"] / rows["uncached"]["seconds_per_step"]
    path = write_result("train_step", {"rows": rows, "cached_over_uncached": ratio})
    print("| latent cache | s/step (batch 16, 64 px) | setup s |")
    print("|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['seconds_per_step']:.3f} | {row['setup_seconds']:.1f} |")
    print(f"\ncached / uncached step time: {ratio:.2f}  ({path})")


if __name__ == "__main__":
    main()
