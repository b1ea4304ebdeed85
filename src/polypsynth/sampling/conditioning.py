"""Class conditioning computed once per checkpoint: class -> prompt -> text embedding, plus the
unconditional embedding. Stored as conditioning.safetensors so sampling needs no text encoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from polypsynth.data.prompts import CLASS_PROMPTS, UNCONDITIONAL_PROMPT
from polypsynth.models.loading import encode_texts


@dataclass
class Conditioning:
    prompts: dict[str, str]  # class name -> prompt, in class order
    embeddings: torch.Tensor  # (classes, tokens, dim) float32
    unconditional: torch.Tensor  # (tokens, dim) float32

    @property
    def classes(self) -> list[str]:
        return list(self.prompts)

    def of(self, class_name: str) -> torch.Tensor:
        return self.embeddings[self.classes.index(class_name)]

    def save(self, path: Path) -> None:
        tensors = {
            "embeddings": self.embeddings.contiguous(),
            "unconditional": self.unconditional.contiguous(),
        }
        save_file(tensors, path, metadata={"prompts": json.dumps(self.prompts)})

    @classmethod
    def load(cls, path: Path) -> Conditioning:
        with safe_open(path, framework="pt") as fh:
            prompts = json.loads(fh.metadata()["prompts"])
            return cls(prompts, fh.get_tensor("embeddings"), fh.get_tensor("unconditional"))


def compute_conditioning(components, prompts: dict[str, str] | None = None) -> Conditioning:
    prompts = dict(prompts or CLASS_PROMPTS)
    hidden = encode_texts(components, [*prompts.values(), UNCONDITIONAL_PROMPT])
    return Conditioning(prompts, hidden[:-1].contiguous(), hidden[-1].contiguous())
