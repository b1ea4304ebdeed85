"""The run folder's bookkeeping: run.json with the configuration and its hash, what a resumption
may change, and refusing an --out that holds another run."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch

from polypsynth.atomic import atomic_write_text
from polypsynth.config import PolypsynthConfig, to_dict
from polypsynth.errors import PolypsynthError
from polypsynth.train.checkpoint import list_checkpoints

# Keys that may change between a run and its resumption (they do not change what was trained).
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "sample_grid", "num_workers"}


class RunError(PolypsynthError):
    """The output folder or the resume request does not fit this run."""


STAGE_ORDER = ("autoencoder", "pretrain", "finetune")


def _comparable(cfg_dict: dict, through: str | None = None) -> dict:
    """What resuming may not change: everything but _RESUMABLE_CHANGES; with `through` (the stage
    a checkpoint was saved in), only what has been trained: the model, the training options, the
    stages up to that one, and the prompts once a diffusion stage has run. Stages after it are free."""
    out = copy.deepcopy(cfg_dict)
    if through is not None:
        trained = STAGE_ORDER[: STAGE_ORDER.index(through) + 1]
        out["stage"] = {k: v for k, v in out.get("stage", {}).items() if k in trained}
        if through == "autoencoder":
            out.pop("prompts", None)

    def strip(node):
        if isinstance(node, dict):
            for key in list(node):
                if key in _RESUMABLE_CHANGES:
                    del node[key]
                else:
                    strip(node[key])

    strip(out)
    return out


def config_hash(cfg: PolypsynthConfig, through: str | None = None) -> str:
    text = json.dumps(_comparable(to_dict(cfg), through), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _diff_keys(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [k for key in keys for k in _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def prepare_out(
    out: Path, cfg: PolypsynthConfig, resume: str | None, trained_through: str | None = None
) -> None:
    """Refuse an --out that holds something else; on resume, a config that changes what has been
    trained (`trained_through`: the resumed checkpoint's stage); write run.json."""
    run_file = out / "run.json"
    current = to_dict(cfg)
    # A run that stopped before its first checkpoint has nothing to keep: start it afresh.
    restart = run_file.is_file() and resume is None and not list_checkpoints(out)
    if run_file.is_file() and not restart:
        if resume is None:
            raise RunError(
                f"--out {out} already holds a run; pass --resume latest to continue it, or choose another --out"
            )
        previous = json.loads(run_file.read_text())["config"]
        changed = _diff_keys(_comparable(previous, trained_through), _comparable(current, trained_through))
        if changed:
            raise RunError(f"--resume: the config differs from the run in {out} at: {', '.join(changed)}")
    elif not restart and out.exists() and any(out.iterdir()):
        raise RunError(f"--out {out} is not empty and holds no polypsynth run (no run.json)")
    elif resume == "latest":
        raise RunError(f"--resume latest: {out} holds no run to resume")
    from accelerate import PartialState

    if PartialState(cpu=on_cpu()).is_main_process:  # every process checks; one writes
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            run_file, json.dumps({"config": current, "config_hash": config_hash(cfg)}, indent=2)
        )


def on_cpu() -> bool:
    """Without a GPU, accelerate forms a process group (gloo, MULTI_CPU) only when told `cpu`."""
    return not torch.cuda.is_available()
