"""Typed configuration: dataclasses with a docstring per field, YAML holding values only.

`load_config(path, overrides)` reads YAML, applies `a.b=c` overrides (values parsed as YAML), and
builds the dataclass tree, rejecting unknown keys (with the allowed ones listed) and values of the
wrong type. `validate()` then checks values that depend on each other.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from polypsynth.errors import ConfigError


@dataclass
class DataSource:
    """One dataset to read records from (see polypsynth.data.sources)."""

    kind: Literal["phantom", "image_folder", "csv", "sun", "cvc_classif", "cvc_segment"]
    """Layout of the dataset: phantom, image_folder, csv, sun (SUN database or SUN-SEG),
    cvc_classif (CVC-ClinicHDclassif), cvc_segment (CVC-ClinicHDsegment)."""
    path: str
    """Folder (or CSV file for kind csv) holding the dataset; relative paths are taken from the
    directory the command runs in."""
    subset: str | None = None
    """phantom only: stage1, classif or unlabelled."""
    split: str | None = None
    """Keep only records of this split (train or test); null keeps all."""
    labels: list[str] | None = None
    """Keep only records with these labels (after mapping); null keeps all."""
    frame_step: int = 1
    """sun only: keep every n-th frame of each video case (consecutive frames are near-duplicates)."""
    label_map: dict[str, str] = field(default_factory=dict)
    """Extra label names mapped to AD / NON_AD / polyp / non_polyp, on top of the built-in map."""


@dataclass
class StageConfig:
    """One training stage. Stages run in the order autoencoder, pretrain, finetune."""

    enabled: bool = True
    """Run this stage. The autoencoder stage is skipped anyway when the VAE comes pretrained."""
    steps: int = 0
    """Optimizer steps in this stage."""
    learning_rate: float = 1e-4
    """Peak learning rate (AdamW)."""
    lr_warmup_steps: int = 0
    """Linear warm-up steps before the schedule."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: constant, or cosine decay to 0 at the stage's last step."""
    batch_size: int = 8
    """Images per optimizer step per device (before gradient accumulation)."""
    gradient_accumulation: int = 1
    """Micro-batches accumulated into one optimizer step."""
    checkpoint_every: int = 0
    """Save a checkpoint every n steps of this stage (0: only at the end of the stage)."""
    freeze: list[str] = field(default_factory=list)
    """U-Net module name prefixes kept frozen, e.g. conv_in, down_blocks.0, down_blocks.1."""
    data: list[DataSource] = field(default_factory=list)
    """Main data of the stage."""
    replay: list[DataSource] = field(default_factory=list)
    """finetune: stage-1 data replayed to keep what pretraining learnt."""
    replay_share: float = 0.0
    """Share of each batch drawn from `replay` (0 to <1)."""
    unlabelled: list[DataSource] = field(default_factory=list)
    """finetune: high-quality polyp images without pathology labels."""
    unlabelled_share: float = 0.0
    """Share of each batch drawn from `unlabelled` (0 to <1)."""
    balance_classes: bool = False
    """Draw the main images so every label is equally likely (inverse-frequency weights), e.g.
    AD and NON_AD where the data hold twice as many AD; replay and unlabelled draws are unchanged."""
    kl_weight: float = 1e-6
    """autoencoder: weight of the KL term against the reconstruction loss."""
    crop: int | None = None
    """autoencoder: train on random square crops of this many pixels (one position per batch);
    null: whole images. The VAE is convolutional, so it learns the same local code from crops at a
    fraction of the cost per step (32 of 64 px: about 2x faster on a CPU)."""
    crop_share: float = 1.0
    """autoencoder, with `crop`: the share of steps, from the first, trained on crops; the rest use
    whole images, so the group norms and mid-block attention end on whole-image statistics, as the
    VAE sees them when it encodes and decodes."""


@dataclass
class StagesConfig:
    """The three stages of the recipe."""

    autoencoder: StageConfig = field(default_factory=lambda: StageConfig(enabled=False))
    """Trains the VAE on the stage's images (tiny models only: no pretrained VAE exists offline)."""
    pretrain: StageConfig = field(default_factory=StageConfig)
    """Study stage 1: polyp / non-polyp frames with quality-specific prompts."""
    finetune: StageConfig = field(default_factory=StageConfig)
    """Study stage 2: AD / NON_AD with class prompts, replay and unlabelled images, frozen layers."""


@dataclass
class TinyModelConfig:
    """Shape of the Stable-Diffusion-shaped model built offline when model.pretrained is null."""

    unet_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    """U-Net block widths; the first blocks are down/up blocks with cross-attention."""
    layers_per_block: int = 1
    """ResNet layers per U-Net block."""
    attention_head_dim: int = 16
    """Channels per attention head in the U-Net (heads per block = block width / this)."""
    vae_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    """VAE block widths; the latent is downsampled 2**(len-1) times (64 px -> 16x16 latents)."""
    latent_channels: int = 4
    """Channels of the latent image."""
    text_hidden_size: int = 32
    """Width of the CLIP text encoder (also the U-Net cross-attention width)."""
    text_layers: int = 2
    """Transformer layers of the CLIP text encoder."""
    text_heads: int = 4
    """Attention heads of the CLIP text encoder."""
    max_text_length: int = 77
    """Tokenizer length; the tokenizer is character-level, so prompts need about 60 positions."""


@dataclass
class ModelConfig:
    """Which diffusion model to fine-tune."""

    pretrained: str | None = None
    """Local diffusers folder or hub id of a Stable Diffusion model; null builds the tiny model."""
    resolution: int = 64
    """Training and sampling resolution in pixels (a multiple of 8)."""
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    """What the U-Net predicts (tiny model only; a pretrained model keeps its scheduler's)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model."""


@dataclass
class TrainConfig:
    """How the stages are run."""

    seed: int = 0
    """Seed of model init, data order and noise."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """accelerate mixed precision."""
    gradient_checkpointing: bool = False
    """Trade compute for memory in the U-Net."""
    ema: bool = False
    """Keep an exponential moving average of the U-Net weights (saved in checkpoints)."""
    ema_decay: float = 0.999
    """EMA decay."""
    cond_dropout: float = 0.1
    """Share of training prompts replaced by the empty prompt (classifier-free guidance needs it)."""
    min_snr_gamma: float | None = None
    """Min-SNR loss weighting gamma (e.g. 5.0); null for plain MSE."""
    latent_cache: bool = False
    """Encode every image with the VAE (and each prompt) once and train from the cache."""
    flip: bool = True
    """Random horizontal and vertical flips."""
    num_workers: int = 0
    """DataLoader worker processes."""
    log_every: int = 10
    """Log loss and learning rate every n steps."""
    sample_grid: bool = True
    """Write a small sample grid beside each checkpoint."""


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
            self._validate_tiny()
        for name in ("autoencoder", "pretrain", "finetune"):
            self._validate_stage(name, getattr(self.stage, name))
        if not 0.0 <= self.train.cond_dropout < 1.0:
            raise ConfigError(f"train.cond_dropout must be in [0, 1), got {self.train.cond_dropout}")
        if not 0.0 < self.train.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1), got {self.train.ema_decay}")
        self._validate_numbers()
        return self

    def _validate_stage(self, name: str, stage: StageConfig) -> None:
        where = f"stage.{name}"
        if stage.steps < 0:
            raise ConfigError(f"{where}.steps must be >= 0, got {stage.steps}")
        if stage.enabled and stage.steps > 0 and stage.batch_size <= 0:
            raise ConfigError(f"{where}.batch_size must be > 0, got {stage.batch_size}")
        if stage.gradient_accumulation < 1:
            raise ConfigError(
                f"{where}.gradient_accumulation must be >= 1, got {stage.gradient_accumulation}"
            )
        if not (math.isfinite(stage.learning_rate) and stage.learning_rate > 0):
            raise ConfigError(f"{where}.learning_rate must be a positive number, got {stage.learning_rate}")
        if stage.checkpoint_every < 0:
            raise ConfigError(f"{where}.checkpoint_every must be >= 0, got {stage.checkpoint_every}")
        if stage.crop is not None:
            down = 2 ** (len(self.model.tiny.vae_channels) - 1)
            if name != "autoencoder":
                raise ConfigError(f"{where}.crop applies to the autoencoder stage only; remove it")
            if not (0 < stage.crop <= self.model.resolution and stage.crop % down == 0):
                raise ConfigError(
                    f"{where}.crop must be a multiple of {down} (the VAE's downsampling) between "
                    f"{down} and model.resolution {self.model.resolution}, got {stage.crop}"
                )
        if not 0.0 <= stage.crop_share <= 1.0:
            raise ConfigError(f"{where}.crop_share must be in [0, 1], got {stage.crop_share}")
        for share_name in ("replay_share", "unlabelled_share"):
            share = getattr(stage, share_name)
            if not 0.0 <= share < 1.0:
                raise ConfigError(f"{where}.{share_name} must be in [0, 1), got {share}")
        if stage.replay_share + stage.unlabelled_share >= 1.0:
            raise ConfigError(
                f"{where}: replay_share + unlabelled_share must be < 1 so the main data is drawn, "
                f"got {stage.replay_share + stage.unlabelled_share}"
            )
        if stage.replay_share > 0 and not stage.replay:
            raise ConfigError(f"{where}.replay_share is {stage.replay_share} but {where}.replay is empty")
        if stage.unlabelled_share > 0 and not stage.unlabelled:
            raise ConfigError(
                f"{where}.unlabelled_share is {stage.unlabelled_share} but {where}.unlabelled is empty"
            )
        for i, src in enumerate([*stage.data, *stage.replay, *stage.unlabelled]):
            if src.kind == "phantom" and src.subset not in ("stage1", "classif", "unlabelled"):
                raise ConfigError(
                    f"{where} source {i} ({src.path}): phantom needs subset stage1, classif or "
                    f"unlabelled, got {src.subset!r}"
                )
            if src.frame_step < 1:
                raise ConfigError(f"{where} source {i} ({src.path}): frame_step must be >= 1")

    def _validate_numbers(self) -> None:
        """Counts and rates that would fail, or divide by zero, only once training runs."""
        checks: list[tuple[str, Any, bool, str]] = [
            ("train.log_every", self.train.log_every, self.train.log_every >= 1, ">= 1"),
            ("train.num_workers", self.train.num_workers, self.train.num_workers >= 0, ">= 0"),
        ]
        gamma = self.train.min_snr_gamma
        checks.append(
            (
                "train.min_snr_gamma",
                gamma,
                gamma is None or (math.isfinite(gamma) and gamma > 0),
                "> 0 or null",
            )
        )
        for name in ("autoencoder", "pretrain", "finetune"):
            stage: StageConfig = getattr(self.stage, name)
            checks.append(
                (f"stage.{name}.lr_warmup_steps", stage.lr_warmup_steps, stage.lr_warmup_steps >= 0, ">= 0")
            )
            checks.append((f"stage.{name}.kl_weight", stage.kl_weight, stage.kl_weight >= 0, ">= 0"))
        for key, value, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{key} must be {expected}, got {value}")

    def _validate_tiny(self) -> None:
        """The tiny model's shape, checked before anything is built (diffusers and transformers
        would refuse it deep inside their constructors)."""
        tiny, where = self.model.tiny, "model.tiny"
        for key in ("unet_channels", "vae_channels"):
            widths = getattr(tiny, key)
            if not widths or any(w < 1 for w in widths):
                raise ConfigError(f"{where}.{key} must be a non-empty list of positive widths, got {widths}")
        for key in (
            "layers_per_block",
            "attention_head_dim",
            "latent_channels",
            "text_hidden_size",
            "text_layers",
            "text_heads",
            "max_text_length",
        ):
            if getattr(tiny, key) < 1:
                raise ConfigError(f"{where}.{key} must be >= 1, got {getattr(tiny, key)}")
        bad = [c for c in tiny.unet_channels if c % tiny.attention_head_dim]
        if bad:
            raise ConfigError(
                f"{where}.attention_head_dim {tiny.attention_head_dim} (channels per head) must divide every "
                f"{where}.unet_channels entry {tiny.unet_channels}; {bad} are not multiples of it"
            )
        if tiny.text_hidden_size % tiny.text_heads:
            raise ConfigError(
                f"{where}.text_hidden_size {tiny.text_hidden_size} must be a multiple of {where}.text_heads "
                f"{tiny.text_heads} (each head takes an equal share)"
            )
        groups = min(8, *tiny.unet_channels, *tiny.vae_channels)  # the tiny model's GroupNorm groups
        uneven = [c for c in [*tiny.unet_channels, *tiny.vae_channels] if c % groups]
        if uneven:
            raise ConfigError(
                f"{where}: every unet_channels and vae_channels width must be a multiple of {groups} (the group "
                f"norms' groups), got {uneven}"
            )
        factor = 2 ** (len(tiny.vae_channels) - 1) * 2 ** (len(tiny.unet_channels) - 1)
        if self.model.resolution % factor:
            raise ConfigError(
                f"model.resolution {self.model.resolution} must be divisible by {factor} for {where}.vae_channels "
                f"{tiny.vae_channels} and {where}.unet_channels {tiny.unet_channels}"
            )


# ----------------------------------------------------------------------------------------------
# Generic dict -> dataclass conversion with exact error messages.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError:
                continue  # the next type may fit; none fitting is one error naming them all
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_convert(k, args[0], where): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")  # a bug in the schema, not the input


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    label = where or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"unknown config key '{key}'; allowed keys here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{label}: missing required key '{name}'")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans and floats. YAML 1.1 (PyYAML) also reads yes/no/on/off as booleans, which
    turns `mixed_precision: no` or `--set train.mixed_precision=no` into False, and reads `1e-4`
    (no dot) as a string; YAML 1.2 reads it as the number everyone means."""


_REPLACED = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(  # YAML 1.2 core schema: a dot or an exponent (or both), .inf, .nan
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` override to a raw YAML mapping; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set: bad key {key!r}")
    try:
        value = _load_yaml(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {text!r} is not valid YAML: {exc}") from exc
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a mapping")
        node = nxt
    node[parts[-1]] = value


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
