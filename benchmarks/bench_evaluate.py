"""Evaluation costs on this machine.

    python benchmarks/bench_evaluate.py [--quick]

KID x4 for 1k (every image, jackknife error) and 10k (disjoint subsets of 1000) 2048-d features
per set, scikit-learn t-SNE for 2k and 10k points (PCA to 50 first), and feature extraction images/s (Inception-v3 at 299x299, the
EfficientNet-B0 classifier at 128x128). Writes benchmarks/results/evaluate.json.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1k / 2k sizes only")
    args = parser.parse_args()

    import torch

    from polypsynth.evaluate.features import InceptionExtractor
    from polypsynth.evaluate.kid import four_comparisons
    from polypsynth.evaluate.tsne import embed

    rng = np.random.default_rng(0)
    rows = {"kid_x4_seconds": {}, "tsne_seconds": {}, "features_images_per_second": {}}
    for n in (1000,) if args.quick else (1000, 10000):
        sets = {c: rng.normal(size=(n, 2048)) for c in ("AD", "NON_AD")}
        syn = {c: rng.normal(0.1, 1, size=(n, 2048)) for c in ("AD", "NON_AD")}
        rows["kid_x4_seconds"][n] = _time(lambda: four_comparisons(sets, syn, subsets=100, subset_size=1000))  # noqa: B023
        print("kid", n, rows["kid_x4_seconds"][n], flush=True)
    for n in (2000,) if args.quick else (2000, 10000):
        groups = {
            g: rng.normal(i * 0.3, 1, size=(n // 4, 2048))
            for i, g in enumerate(("real AD", "real NON_AD", "synthetic AD", "synthetic NON_AD"))
        }
        rows["tsne_seconds"][n] = _time(lambda: embed(groups))  # noqa: B023
        print("tsne", n, rows["tsne_seconds"][n], flush=True)
    images = torch.rand(32, 3, 256, 256)
    inception = InceptionExtractor()
    x = torch.nn.functional.interpolate(images, size=(299, 299), mode="bilinear")
    inception(x[:4])
    rows["features_images_per_second"]["inception_299"] = 32 / _time(lambda: inception(x))
    from polypsynth.evaluate.classify import build_model, normalise

    model = build_model().eval()
    x = torch.nn.functional.interpolate(images, size=(128, 128), mode="bilinear")
    with torch.no_grad():
        model(normalise(x[:4]))
        rows["features_images_per_second"]["efficientnet_b0_128"] = 32 / _time(lambda: model(normalise(x)))
    path = write_result("evaluate", rows)
    print("\n| cost | size | seconds or images/s |\n|---|---|---|")
    for n, s in rows["kid_x4_seconds"].items():
        how = "every image, jackknife" if n <= 4096 else "disjoint subsets of 1000"
        print(f"| KID x4 ({how}) | {n} features per set | {s:.1f} s |")
    for n, s in rows["tsne_seconds"].items():
        print(f"| t-SNE (PCA 50, sklearn) | {n} points | {s:.1f} s |")
    for name, v in rows["features_images_per_second"].items():
        print(f"| feature extraction | {name} | {v:.1f} images/s |")
    print(f"\n({path})")


if __name__ == "__main__":
    main()
