"""Typed configuration: dataclasses with a docstring per field (schema.py), YAML holding values only.

`load_config(path, overrides)` reads YAML, applies `a.b=c` overrides (values parsed as YAML), and
builds the dataclass tree, rejecting unknown keys (with the allowed ones listed) and values of the
wrong type (yaml_io.py). `validate()` then checks values that depend on each other (checks.py).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from polypsynth.config.checks import check_numbers, check_stage, check_tiny
from polypsynth.config.schema import (
    DataSource,
    ModelConfig,
    StageConfig,
    StagesConfig,
    TinyModelConfig,
    TrainConfig,
    downsampling,
)
from polypsynth.config.yaml_io import _load_yaml, apply_override, from_dict, to_dict
from polypsynth.errors import ConfigError

__all__ = [
    "DataSource",
    "ModelConfig",
    "PolypsynthConfig",
    "StageConfig",
    "StagesConfig",
    "TinyModelConfig",
    "TrainConfig",
    "apply_override",
    "downsampling",
    "dump_config",
    "from_dict",
    "load_config",
    "to_dict",
]


@dataclass
class PolypsynthConfig:
    """A whole run: model, stages and training options."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The diffusion model."""
    stage: StagesConfig = field(default_factory=StagesConfig)
    """The training stages."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training options shared by the stages."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Class name -> prompt overrides (defaults in polypsynth.data.prompts)."""

    def validate(self) -> PolypsynthConfig:
        if self.model.resolution <= 0 or self.model.resolution % 8:
            raise ConfigError(
                f"model.resolution must be a positive multiple of 8, got {self.model.resolution}"
            )
        if self.model.pretrained is None:
            check_tiny(self.model.tiny, self.model.resolution)
        for name in ("autoencoder", "pretrain", "finetune"):
            check_stage(name, getattr(self.stage, name), self.model)
        if not 0.0 <= self.train.cond_dropout < 1.0:
            raise ConfigError(f"train.cond_dropout must be in [0, 1), got {self.train.cond_dropout}")
        if not 0.0 < self.train.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1), got {self.train.ema_decay}")
        check_numbers(self.train, self.stage)
        return self


def load_config(path: str | Path | None, overrides: typing.Iterable[str] = ()) -> PolypsynthConfig:
    """Load a YAML config (or the defaults when path is None), apply overrides and validate."""
    raw: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = _load_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for assignment in overrides:
        apply_override(raw, assignment)
    return from_dict(PolypsynthConfig, raw).validate()


def dump_config(cfg: PolypsynthConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
