"""Checkpoints: a diffusers model folder plus the training state beside it, written atomically.

    OUT/checkpoints/step-000100/
        model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/   (EMA weights in unet/
                                                                  when EMA is on: what sampling uses)
        polypsynth.json                 stage, steps, config hash, validation loss
        samples.png                     a small sample grid (optional)
        training_state/state.json       stage, stage_step, global_step, config hash
        training_state/trainable.safetensors   raw weights of the module being trained
        training_state/ema.safetensors  EMA shadow weights (when EMA is on)
        training_state/optimizer.pt, lr_scheduler.pt   state dicts (loaded with weights_only=True)
        training_state/scaler.pt        the fp16 GradScaler's state (when mixed precision is fp16)

No RNG state is saved: every step reseeds from (seed, stage, step), so resuming is exact.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from polypsynth.atomic import atomic_dir
from polypsynth.errors import PolypsynthError
from polypsynth.models.loading import ModelLoadError, check_weights, missing_files, save_components

STEP_DIR = re.compile(r"^step-(\d{6,})$")
STATE_FILES = ("state.json", "trainable.safetensors", "optimizer.pt", "lr_scheduler.pt")


class CheckpointError(PolypsynthError):
    """A checkpoint is missing, incomplete or of another run."""


@dataclass
class TrainState:
    stage: str  # autoencoder, pretrain or finetune
    stage_step: int  # optimizer steps done in this stage
    global_step: int  # optimizer steps done in the whole run
    config_hash: str
    ema: bool = False
    processes: int = 1  # processes that trained together (each drew its own batches)


def checkpoint_name(global_step: int) -> str:
    return f"step-{global_step:06d}"


def list_checkpoints(out: Path) -> list[Path]:
    """Complete-looking checkpoint folders of a run, oldest first (temporary folders are ignored)."""
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return []
    steps = {p: m for p in folder.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))}
    return sorted(steps, key=lambda p: int(steps[p].group(1)))


def save_checkpoint(
    out: Path,
    components,
    state: TrainState,
    trainable_state: dict[str, torch.Tensor],
    optimizer,
    *,
    lr_scheduler,
    ema=None,
    extras=None,
    scaler=None,
) -> Path:
    """Write checkpoints/step-N atomically. `components` must already hold the weights to sample
    from (EMA weights swapped in by the caller when EMA is on); `trainable_state` holds the raw weights
    of the module being trained."""
    final = Path(out) / "checkpoints" / checkpoint_name(state.global_step)
    with atomic_dir(final, overwrite=True, what="checkpoint") as tmp:
        save_components(components, tmp)
        meta = json.loads((tmp / "polypsynth.json").read_text())
        meta.update(asdict(state))
        (tmp / "polypsynth.json").write_text(json.dumps(meta, indent=2))
        ts = tmp / "training_state"
        ts.mkdir()
        save_file({k: v.contiguous() for k, v in trainable_state.items()}, ts / "trainable.safetensors")
        torch.save(optimizer.state_dict(), ts / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), ts / "lr_scheduler.pt")
        if scaler is not None:  # its loss scale and growth tracker: fp16 resumes exactly
            torch.save(scaler.state_dict(), ts / "scaler.pt")
        if ema is not None:
            save_file(
                {f"shadow.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                ts / "ema.safetensors",
            )
            (ts / "ema.json").write_text(
                json.dumps({"decay": ema.decay, "optimization_step": ema.optimization_step})
            )
        if extras is not None:  # validation loss, sample grid: written into the folder before it is complete
            extras(tmp)
        (ts / "state.json").write_text(json.dumps(asdict(state), indent=2))  # last: marks the state complete
    return final


def resolve_resume(out: Path, resume: str) -> Path:
    """`latest` or a path -> a checkpoint folder, validated."""
    if resume == "latest":
        found = list_checkpoints(out)
        if not found:
            raise CheckpointError(f"--resume latest: {Path(out) / 'checkpoints'} holds no checkpoint")
        path = found[-1]
    else:
        path = Path(resume)
    validate_checkpoint(path)
    return path


def validate_checkpoint(path: Path) -> None:
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    missing = missing_files(path) + [
        f"training_state/{f}" for f in STATE_FILES if not (path / "training_state" / f).is_file()
    ]
    if not missing:
        state = _read_json(path / "training_state" / "state.json")
        if state.get("ema") and not (path / "training_state" / "ema.safetensors").is_file():
            missing.append("training_state/ema.safetensors")
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is incomplete or half-written: missing {', '.join(missing)}"
        )
    try:
        check_weights(path / "training_state")
    except ModelLoadError as exc:
        raise CheckpointError(str(exc)) from exc
    for file in sorted((path / "training_state").glob("*.pt")):  # torch.save writes zip archives
        try:
            zipfile.ZipFile(file).close()  # reads the central directory, at the very end of the file
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(
                f"{file} is damaged ({exc}): the file is truncated or altered; resume from another checkpoint"
            ) from exc


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is damaged (not valid JSON: {exc}); use another checkpoint") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is damaged: expected a JSON object, got {type(value).__name__}")
    return value


def _torch_state(path: Path) -> dict:
    """A state dict saved with torch.save, loaded with weights_only=True; a damaged file is named."""
    try:
        return torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        reason = str(exc).split(". ")[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is damaged ({reason}): the file is truncated or altered; resume from another checkpoint"
        ) from exc


def read_state(path: Path) -> TrainState:
    file = Path(path) / "training_state" / "state.json"
    try:
        return TrainState(**_read_json(file))
    except TypeError as exc:
        raise CheckpointError(f"{file} is damaged: {exc}") from exc


def load_training_state(path: Path, trainable, optimizer, lr_scheduler, *, ema=None, scaler=None) -> None:
    ts = Path(path) / "training_state"
    trainable.load_state_dict(load_file(ts / "trainable.safetensors"))
    optimizer.load_state_dict(_torch_state(ts / "optimizer.pt"))
    lr_scheduler.load_state_dict(_torch_state(ts / "lr_scheduler.pt"))
    if scaler is not None:
        if not (ts / "scaler.pt").is_file():
            raise CheckpointError(
                f"checkpoint {path} has no fp16 GradScaler state (training_state/scaler.pt): it was "
                "trained without fp16 mixed precision; resume it with the same train.mixed_precision"
            )
        scaler.load_state_dict(_torch_state(ts / "scaler.pt"))
    if ema is not None:
        shadow = load_file(ts / "ema.safetensors")
        ema.shadow_params = [shadow[f"shadow.{i}"].to(p.device) for i, p in enumerate(ema.shadow_params)]
        meta = _read_json(ts / "ema.json")
        ema.optimization_step = meta["optimization_step"]
