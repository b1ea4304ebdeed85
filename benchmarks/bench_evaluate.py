"""Evaluation costs on this machine, each beside the library it must beat, in the same run.

    python benchmarks/bench_evaluate.py [--quick]

- KID x4 (with the two class margins, as `evaluate` computes them) for 1k (one block of every
  image) and 10k (three disjoint blocks of at most 4096) float32 2048-d features per set, against
  torchmetrics' KernelInceptionDistance at its defaults (100 subsets of 1000) on the same features:
  seconds, the ratio, and the largest difference of the estimates in units of our standard error;
  at 10k also both estimates against the U-statistic over every pair of the 10k images (one block
  of 10k, not timed against anything);
- t-SNE of 2k and 10k points (PCA to 50 first) as evaluate runs it (openTSNE) against
  scikit-learn's TSNE with the same perplexity and PCA start;
- feature extraction images/s: Inception-v3 at 299x299, EfficientNet-Lite0 at 224x224;
- with --evaluate-run: `polypsynth evaluate` at its defaults on the phantom (240 training and 120
  test images, four checkpoints of 240 images each standing in for samples), wall time;
- with --hash-search: the copy search by perceptual hash with mirrored queries (test and synthetic
  images, each hashed four ways) against the leakage search before it (test images as stored),
  the same pools, the full demo's sizes at 64 px; best of three, and the ratio;
- with --judge: `polypsynth judge docs/study/table.yaml` as a user runs it (a fresh interpreter,
  imports included), five runs: the slowest and the median seconds (goal under 5 s).

Writes benchmarks/results/evaluate.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import write_result  # noqa: E402


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def torchmetrics_kid(real: dict, syn: dict) -> dict:
    """The four comparisons with torchmetrics' KernelInceptionDistance at its defaults, fed the
    features directly (an identity "extractor"), float32 as torchmetrics computes."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    from polypsynth.evaluate.kid import COMPARISONS

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    out = {}
    for key, syn_class, real_class, _ in COMPARISONS:
        metric = KernelInceptionDistance(feature=Identity(), normalize=True)
        metric.update(torch.tensor(real[real_class], dtype=torch.float32), real=True)
        metric.update(torch.tensor(syn[syn_class], dtype=torch.float32), real=False)
        mean, std = metric.compute()
        out[key] = float(mean)
    return out


def evaluate_run(workdir: Path) -> dict:
    """`evaluate` with its defaults on phantom data, four stand-in checkpoints of 240 images."""
    import shutil

    from polypsynth.data.phantom import PhantomPlan, generate_phantom
    from polypsynth.data.sources import load_phantom
    from polypsynth.evaluate.options import EvalOptions
    from polypsynth.evaluate.run import evaluate
    from polypsynth.evaluate.sets import real_data, synthetic_checkpoints

    generate_phantom(
        workdir / "real", seed=1, plan=PhantomPlan(size=256, stage1=0, unlabelled=0), progress=False
    )
    for k in range(4):
        src = workdir / f"src{k}"
        plan = PhantomPlan(size=256, stage1=0, train=240, test=0, unlabelled=0, ad_share=0.5)
        generate_phantom(src, seed=20 + k, plan=plan, progress=False)
        for c in ("AD", "NON_AD"):
            shutil.copytree(src / "classif" / "train" / c, workdir / "samples" / f"step-00{k + 1}000" / c)
    real = real_data(load_phantom(workdir / "real", "classif"))
    checkpoints = synthetic_checkpoints(workdir / "samples")
    options = EvalOptions(cache_dir=str(workdir / "cache"))
    start = time.perf_counter()
    results = evaluate(real, checkpoints, options, progress=False).to_dict()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "real": results["real"],
        "checkpoints": {c["name"]: c["images"] for c in results["checkpoints"]},
        "classifier": {k: v for k, v in vars(options.classifier).items()},
        "seeds": options.classify_seeds,
        "control_folds": results["control"]["folds"],
    }


def judge_run() -> dict:
    """Wall seconds of `polypsynth judge` on the study's tables, in a fresh interpreter each time."""
    import subprocess

    table = Path(__file__).parents[1] / "docs" / "study" / "table.yaml"
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "polypsynth", "judge", str(table)], check=True, capture_output=True
        )
        seconds.append(time.perf_counter() - start)
    return {"runs": seconds, "slowest_s": max(seconds), "median_s": float(np.median(seconds)), "goal_s": 5.0}


def copy_search(workdir: Path) -> dict:
    """Seconds of the pixel-space copy search (each query mirrored 4 ways, each pool image whole
    and in 48 crops) against the hash search it replaced (mirrored queries, pools as stored), on the
    full demo's sizes."""
    from polypsynth.data.inspect import hash_flips, hash_paths
    from polypsynth.data.phantom import PhantomPlan, generate_phantom
    from polypsynth.evaluate import pixels
    from polypsynth.evaluate.features import GeneratorView

    plan = PhantomPlan(size=64, stage1=600, train=240 + 384, test=120, unlabelled=120)
    generate_phantom(workdir, seed=3, plan=plan, progress=False)
    train = sorted((workdir / "classif" / "train").rglob("*.png"))
    test = sorted((workdir / "classif" / "test").rglob("*.png"))
    synthetic, labelled = train[:384], train[384:]  # phantom images standing in for 4 x 96 samples
    pools = [
        *sorted((workdir / "stage1").rglob("*.png")),
        *sorted((workdir / "unlabelled").rglob("*.png")),
        *labelled,
    ]
    view = GeneratorView(64)

    def pixel_search():
        queries = {
            "test": pixels.query_thumbnails(test, view),
            "syn": pixels.query_thumbnails(synthetic, view),
        }
        pixels.search(queries, {"pools": pools}, view)

    def best(fn) -> float:
        return min(_time(fn) for _ in range(3))

    before = best(lambda: (hash_flips(test + synthetic), hash_paths(pools)))
    after = best(pixel_search)
    return {
        "queries": len(test) + len(synthetic),
        "pool": len(pools),
        "pool_views": len(pools) * len(pixels.CROPS),
        "hash_s": before,
        "pixels_s": after,
        "ratio": after / before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1k / 2k sizes only")
    parser.add_argument("--evaluate-run", action="store_true", help="only time `evaluate` on the phantom")
    parser.add_argument(
        "--copy-search",
        action="store_true",
        help="only time the pixel-space copy search against the hash search",
    )
    parser.add_argument(
        "--judge", action="store_true", help="only time `polypsynth judge` on the study's tables"
    )
    args = parser.parse_args()
    if args.judge:
        row = judge_run()
        path = write_result("judge", row)
        print(
            f"polypsynth judge: slowest {row['slowest_s']:.2f} s, median {row['median_s']:.2f} s of 5 ({path})"
        )
        return
    if args.copy_search:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            row = copy_search(Path(tmp))
        path = write_result("copy_search", row)
        print(
            f"copy search, {row['queries']} queries x 4 flips vs {row['pool']} pool images "
            f"({row['pool_views']} views): pixels {row['pixels_s']:.2f} s, hash {row['hash_s']:.2f} s, "
            f"ratio {row['ratio']:.2f} ({path})"
        )
        return
    if args.evaluate_run:
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            run = evaluate_run(Path(tmp))
        path = write_result("evaluate_run", run)
        print(json.dumps(run, indent=2), f"\n({path})")
        return

    import torch

    from polypsynth.evaluate.features import EfficientNetExtractor, InceptionExtractor
    from polypsynth.evaluate.kid import COMPARISONS, kid_table
    from polypsynth.evaluate.tsne import GROUPS, embed

    rng = np.random.default_rng(0)
    rows: dict = {"kid_x4": {}, "tsne": {}, "features_images_per_second": {}}
    for n in (1000,) if args.quick else (1000, 10000):
        real = {c: rng.normal(size=(n, 2048)).astype(np.float32) for c in ("AD", "NON_AD")}
        syn = {c: rng.normal(0.02, 1, size=(n, 2048)).astype(np.float32) for c in ("AD", "NON_AD")}
        table: dict = {}
        t_ours = _time(lambda: table.update(kid_table(real, syn)))  # noqa: B023
        ours = {key: table[key] for key, *_ in COMPARISONS}
        theirs: dict = {}
        t_tm = _time(lambda: theirs.update(torchmetrics_kid(real, syn)))  # noqa: B023
        row = {
            "polypsynth_s": t_ours,
            "torchmetrics_s": t_tm,
            "speedup": t_tm / t_ours,
            "blocks": ours["syn_AD_vs_real_AD"].blocks,
            "max_diff_in_se": max(abs(ours[k].mean - theirs[k]) / ours[k].se for k in theirs),
            "estimates": {
                k: {"polypsynth": ours[k].mean, "se": ours[k].se, "torchmetrics": theirs[k]} for k in theirs
            },
        }
        if n > 4096:  # the U-statistic over every pair: what both estimators approximate
            exact = kid_table(real, syn, block_size=n)
            row["all_pairs_s"] = _time(lambda: kid_table(real, syn, block_size=n))  # noqa: B023
            for k in theirs:
                row["estimates"][k]["all_pairs"] = exact[k].mean
            row["max_diff_from_all_pairs_in_se"] = {
                "polypsynth": max(abs(ours[k].mean - exact[k].mean) / ours[k].se for k in theirs),
                "torchmetrics": max(abs(theirs[k] - exact[k].mean) / ours[k].se for k in theirs),
            }
        rows["kid_x4"][n] = row
        print("kid", n, rows["kid_x4"][n], flush=True)
    for n in (2000,) if args.quick else (2000, 10000):
        groups = {g: rng.normal(i * 0.3, 1, size=(n // 4, 2048)) for i, g in enumerate(GROUPS)}
        t_ours = _time(lambda: embed(groups))  # noqa: B023

        def sklearn_tsne(groups=groups):
            from sklearn.decomposition import PCA
            from sklearn.manifold import TSNE

            x = PCA(n_components=50, random_state=0).fit_transform(np.concatenate(list(groups.values())))
            TSNE(2, perplexity=30.0, init="pca", random_state=0).fit_transform(x)

        t_sk = _time(sklearn_tsne)
        rows["tsne"][n] = {"polypsynth_s": t_ours, "sklearn_s": t_sk, "speedup": t_sk / t_ours}
        print("tsne", n, rows["tsne"][n], flush=True)
    images = torch.rand(32, 3, 299, 299)
    inception = InceptionExtractor()
    inception(images[:4])
    rows["features_images_per_second"]["inception_299"] = 32 / _time(lambda: inception(images))
    lite = EfficientNetExtractor()
    x = torch.nn.functional.interpolate(images, size=(224, 224), mode="bilinear")
    lite(x[:4])
    rows["features_images_per_second"]["efficientnet_lite0_224"] = 32 / _time(lambda: lite(x))
    path = write_result("evaluate", rows)
    print("\n| cost | size | polypsynth | library | speed-up |\n|---|---|---|---|---|")
    for n, r in rows["kid_x4"].items():
        how = "every pair" if r["blocks"] == 1 else f"{r['blocks']} disjoint blocks, every pair in each"
        extra = ""
        if "max_diff_from_all_pairs_in_se" in r:
            d = r["max_diff_from_all_pairs_in_se"]
            extra = f"; from all 10k pairs: ours {d['polypsynth']:.2f} SE, torchmetrics {d['torchmetrics']:.2f} SE"
        print(
            f"| KID x4 ({how}) vs torchmetrics (100 subsets of 1000) | {n} per set | {r['polypsynth_s']:.1f} s | "
            f"{r['torchmetrics_s']:.1f} s | {r['speedup']:.1f}x (estimates within {r['max_diff_in_se']:.2f} SE{extra}) |"
        )
    for n, r in rows["tsne"].items():
        print(
            f"| t-SNE (PCA 50) vs scikit-learn | {n} points | {r['polypsynth_s']:.1f} s | {r['sklearn_s']:.1f} s | "
            f"{r['speedup']:.1f}x |"
        )
    for name, v in rows["features_images_per_second"].items():
        print(f"| feature extraction | {name} | {v:.1f} images/s | | |")
    print(f"\n({path})")


if __name__ == "__main__":
    main()
