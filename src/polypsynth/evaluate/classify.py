"""Augmented classification as in the study's Table 1: an ImageNet-pretrained EfficientNet
(backbone.py; Lite0 by default, B0 from a local file) fine-tuned on real images only and on real +
synthetic, tested on the real test split; per-class precision, recall, F1, balanced accuracy and
the confusion matrix (scikit-learn), over several seeds, with a 95% interval that counts the test
images and the seeds once each (uncertainty.py). Class imbalance is handled with inverse-frequency
class weights. Nothing downloads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from polypsynth.data.records import CLASSES
from polypsynth.errors import EvalError
from polypsynth.evaluate import uncertainty
from polypsynth.evaluate.backbone import build_backbone, normalise
from polypsynth.evaluate.features import GeneratorView, load_batch
from polypsynth.evaluate.uncertainty import Interval

METRICS = ("precision", "recall", "f1")  # per class, as in the study's Table 1


@dataclass(frozen=True)
class ClassifierOptions:
    image_size: int = 96
    epochs: int = 3  # fine-tuning a pretrained backbone: a few epochs reach its plateau
    batch_size: int = 16
    learning_rate: float = 1e-3
    weights: str | None = None  # local ImageNet EfficientNet-B0 weights; None: Lite0 (backbone.py)
    device: str = "cpu"  # on CUDA, training runs under bf16 autocast (mixed precision)


def build_model(weights: str | None = None) -> torch.nn.Module:
    return build_backbone(len(CLASSES), weights)


def check_device(device: str) -> torch.device:
    """A torch device that exists here, or an EvalError naming what was asked for."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise EvalError(f"--device {device!r} is not a torch device (expected cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvalError(
            f"--device {device}: no CUDA device is visible here (torch.cuda.is_available() is False)"
        )
    if dev.type not in ("cpu", "cuda"):
        raise EvalError(f"--device {device}: only cpu and cuda are supported")
    return dev


MIN_IMAGE_SIZE = 32  # EfficientNet halves its input five times


def check_options(options: ClassifierOptions) -> ClassifierOptions:
    """The classifier's settings in range, or an EvalError naming the option."""
    check_device(options.device)
    if options.epochs < 1:
        raise EvalError(f"--epochs must be >= 1, got {options.epochs}")
    if options.image_size < MIN_IMAGE_SIZE:
        raise EvalError(
            f"--image-size must be >= {MIN_IMAGE_SIZE} (EfficientNet halves its input five times), got {options.image_size}"
        )
    if options.batch_size < 1:
        raise EvalError(f"classifier batch size must be >= 1, got {options.batch_size}")
    if not options.learning_rate > 0:
        raise EvalError(f"classifier learning rate must be > 0, got {options.learning_rate}")
    return options


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed); full precision on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


class ImageBank:
    """Decoded images kept as uint8 tensors, so several trainings decode each file once; every
    image seen through the generator's view first (features.GeneratorView), when given."""

    def __init__(self, size: int, view: GeneratorView | None = None):
        self.size, self.view = size, view
        self._cache: dict = {}

    def get(self, paths: Sequence[Path]) -> torch.Tensor:
        missing = [p for p in paths if p not in self._cache]
        for i in range(0, len(missing), 64):
            chunk = missing[i : i + 64]
            for p, x in zip(chunk, load_batch(chunk, self.size, self.view), strict=True):
                self._cache[p] = (x * 255).round().to(torch.uint8)
        return torch.stack([self._cache[p] for p in paths]).float() / 255.0


def train_classifier(
    paths: Sequence[Path],
    labels: Sequence[int],
    options: ClassifierOptions,
    seed: int,
    bank: ImageBank,
    *,
    desc: str = "classifier",
    progress: bool = True,
) -> torch.nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = check_device(options.device)
    model = build_model(options.weights).to(device)
    x_all = bank.get(paths)
    y_all = torch.tensor(labels)
    counts = torch.bincount(y_all, minlength=len(CLASSES)).float()
    weight = (counts.sum() / (len(CLASSES) * counts.clamp_min(1))).to(device)  # inverse frequency
    opt = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=1e-4)
    steps_per_epoch = max(1, (len(x_all) + options.batch_size - 1) // options.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, options.learning_rate, total_steps=options.epochs * steps_per_epoch
    )
    model.train()
    for _ in tqdm(range(options.epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        perm = torch.randperm(len(x_all), generator=gen)
        for i in range(0, len(perm), options.batch_size):
            idx = perm[i : i + options.batch_size]
            x = x_all[idx].to(device, non_blocking=True)
            flip_h = torch.rand(len(idx), generator=gen) < 0.5
            flip_v = torch.rand(len(idx), generator=gen) < 0.5
            flip_h, flip_v = flip_h.to(device), flip_v.to(device)
            x = torch.where(flip_h.view(-1, 1, 1, 1), x.flip(-1), x)
            x = torch.where(flip_v.view(-1, 1, 1, 1), x.flip(-2), x)
            with _autocast(device):
                logits = model(normalise(model, x))
            loss = F.cross_entropy(logits.float(), y_all[idx].to(device), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def predict(
    model: torch.nn.Module, paths: Sequence[Path], bank: ImageBank, batch_size: int = 64
) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    preds = []
    for i in range(0, len(paths), batch_size):
        x = bank.get(paths[i : i + batch_size]).to(device)
        with _autocast(device):
            preds.append(model(normalise(model, x)).argmax(1).cpu().numpy())
    return np.concatenate(preds)


def classification_metrics(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> dict:
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(CLASSES)))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict = {
        CLASSES[i]: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i in labels
    }
    out["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred))
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


@dataclass(frozen=True)
class ClassifierRun:
    """One trained classifier (one seed) judged on the real test split: the labels, its
    predictions and their metrics (classification_metrics)."""

    y_true: np.ndarray
    y_pred: np.ndarray
    metrics: dict

    @classmethod
    def judged(cls, y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> ClassifierRun:
        return cls(np.asarray(y_true), np.asarray(y_pred), classification_metrics(y_true, y_pred))

    @property
    def correct(self) -> np.ndarray:
        """1.0 where the test image was named right, else 0.0."""
        return (self.y_pred == self.y_true).astype(np.float64)


@dataclass(frozen=True)
class Spread:
    """A metric's mean over seeds and its spread (None from one seed)."""

    mean: float
    std: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None)


@dataclass(frozen=True)
class Row:
    """One row of Table 1 over seeds: per class the mean and spread of each of METRICS, the
    balanced accuracy with its interval, the confusion matrix summed over the runs; an augmented
    row also the synthetic images `added` per class, the control's base row the `folds` averaged."""

    per_class: dict[str, dict[str, Spread]]
    balanced_accuracy: Interval
    confusion: list[list[int]]
    seeds: int
    added: dict[str, int] | None = None
    folds: int | None = None

    @property
    def recall(self) -> dict[str, float]:
        return {c: self.per_class[c]["recall"].mean for c in CLASSES}

    def to_dict(self) -> dict:
        out: dict = {c: {m: asdict(s) for m, s in self.per_class[c].items()} for c in CLASSES}
        out |= {
            "balanced_accuracy": self.balanced_accuracy.to_dict(),
            "confusion": self.confusion,
            "seeds": self.seeds,
        }
        if self.added is not None:
            out["added"] = self.added
        if self.folds is not None:
            out["folds"] = self.folds
        return out


def accuracy_interval(runs: Sequence[ClassifierRun], seed_sd: float | None = None) -> Interval:
    """The seed-averaged balanced accuracy of classifier runs judged on one test split."""
    return uncertainty.interval(runs[0].y_true, np.stack([r.correct for r in runs]), (0.0, 1.0), seed_sd)


def summarise(runs: Sequence[ClassifierRun], seed_sd: float | None = None) -> Row:
    """Mean and spread over seeds (None from one seed) of every per-class metric, and the balanced
    accuracy with its interval over test images and seeds (accuracy_interval; `seed_sd`: the
    declared seed SD, used with one seed)."""
    return Row(
        per_class={c: {m: Spread.of([r.metrics[c][m] for r in runs]) for m in METRICS} for c in CLASSES},
        balanced_accuracy=accuracy_interval(runs, seed_sd),
        confusion=np.sum([r.metrics["confusion"] for r in runs], axis=0).tolist(),
        seeds=len(runs),
    )
