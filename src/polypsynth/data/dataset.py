"""A torch Dataset over records: decoded, resized, optionally flipped, in [-1, 1], with a prompt."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from polypsynth.data.images import open_rgb
from polypsynth.data.prompts import prompt_for
from polypsynth.data.records import Record
from polypsynth.errors import DataError


def square_transform(resolution: int) -> Callable:
    """PIL image -> uint8 3xRxR tensor: the short side resized (antialiased), the centre square.
    The geometric part of training's transform; evaluation brings every image through it."""
    return v2.Compose([v2.ToImage(), v2.Resize(resolution, antialias=True), v2.CenterCrop(resolution)])


def image_transform(resolution: int, flip: bool = False) -> Callable:
    """Resize the short side, centre-crop to a square, flips when training, scale to [-1, 1]."""
    steps = [square_transform(resolution)]
    if flip:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    return v2.Compose(steps)


class RecordDataset(Dataset):
    """Items: {"pixel_values": 3xRxR float in [-1, 1], "prompt", "label", "source", "index"}."""

    def __init__(
        self,
        records: Sequence[Record],
        resolution: int,
        flip: bool = False,
        prompts: Mapping[str, str] | None = None,
    ):
        if not records:
            raise DataError("the dataset holds no records")
        self.records = list(records)
        self.transform = image_transform(resolution, flip)
        self.prompts = dict(prompts or {})

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        return {
            "pixel_values": self.transform(open_rgb(record.path)),
            "prompt": prompt_for(record, self.prompts),
            "label": record.label,
            "source": record.source,
            "index": index,
        }


def to_uint8(pixel_values: torch.Tensor) -> np.ndarray:
    """[-1, 1] CxHxW (or NxCxHxW) tensors back to uint8 HxWxC arrays."""
    x = ((pixel_values.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
