"""The recipe: autoencoder (tiny models), pretrain (study stage 1), finetune (study stage 2).

`train(cfg, out, resume)` runs the enabled stages in order with accelerate (devices, mixed
precision, several processes through `accelerate launch -m polypsynth train ...` or `torchrun`:
one process group, NCCL on GPUs and gloo on CPUs), saves checkpoints every N steps and resumes
exactly from any of them. With several processes each draws its own batches, gradients are
averaged, the logged loss is the mean over processes, and the main process alone writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader
from tqdm import tqdm

from polypsynth.config import PolypsynthConfig, StageConfig, to_dict
from polypsynth.data.dataset import RecordDataset
from polypsynth.data.prompts import class_prompt
from polypsynth.data.records import CLASSES, Record
from polypsynth.models import Components, build_tiny, load_components, load_pretrained
from polypsynth.train.checkpoint import (
    TrainState,
    list_checkpoints,
    load_training_state,
    read_state,
    resolve_resume,
    save_checkpoint,
)
from polypsynth.train.grid import write_sample_grid
from polypsynth.train.mix import MixPlan, StepBatchSampler
from polypsynth.train.objectives import AutoencoderObjective, DiffusionObjective, Objective
from polypsynth.train.preflight import PlannedStage, check_run
from polypsynth.train.run_folder import RunError, config_hash, on_cpu, prepare_out
from polypsynth.train.validate import validation_loss

STAGES = ("autoencoder", "pretrain", "finetune")


@dataclass
class StageResult:
    name: str
    losses: list[float]
    checkpoints: list[Path]
    step_seconds: float = 0.0  # time in optimizer steps (data, forward, backward), checkpoints excluded
    setup_seconds: float = 0.0  # data listing, prompt encoding and the latent cache
    learning_rates: list[float] = field(default_factory=list)  # the rate each step used


def _initial_components(cfg: PolypsynthConfig) -> Components:
    if cfg.model.pretrained:
        components = load_pretrained(cfg.model.pretrained)
    else:
        components = build_tiny(
            cfg.model.tiny, cfg.model.resolution, cfg.model.prediction_type, seed=cfg.train.seed
        )
    components.resolution = cfg.model.resolution  # recorded with every checkpoint (resolution_of)
    return components


def _step_generator(seed: int, stage_index: int, step: int, process: int) -> torch.Generator:
    value = np.random.SeedSequence([seed, stage_index, step, process]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(value))


def train(
    cfg: PolypsynthConfig, out: str | Path, resume: str | None = None, progress: bool = True
) -> dict[str, StageResult]:
    """Run the recipe; returns per stage its losses and the checkpoints written. A run refused or
    failed before its first checkpoint takes back the --out folder it created."""
    out = Path(out)
    fresh = not out.exists()
    try:
        return _train(cfg, out, resume, progress)
    except BaseException:
        if fresh and not list_checkpoints(out) and PartialState(cpu=on_cpu()).is_main_process:
            shutil.rmtree(out, ignore_errors=True)  # run.json and empty logs: nothing to resume
        raise


def _train(cfg: PolypsynthConfig, out: Path, resume: str | None, progress: bool) -> dict[str, StageResult]:
    ckpt = (
        resolve_resume(out, resume)
        if resume and (resume != "latest" or (out / "run.json").is_file())
        else None
    )
    state = read_state(ckpt) if ckpt else None
    prepare_out(out, cfg, resume, trained_through=state.stage if state else None)
    if state is not None and state.config_hash not in (
        config_hash(cfg),
        config_hash(cfg, through=state.stage),
    ):
        raise RunError(
            f"--resume {ckpt}: the checkpoint belongs to another configuration (hash {state.config_hash})"
        )

    accelerator = Accelerator(
        cpu=on_cpu(),
        mixed_precision=cfg.train.mixed_precision,
        log_with="tensorboard",
        project_dir=out / "logs",
    )
    flat = {
        k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in _flatten(to_dict(cfg)).items()
    }
    accelerator.init_trackers("train", config=flat)
    components = load_components(ckpt) if ckpt else _initial_components(cfg)
    components.text_encoder.requires_grad_(False)
    plan = _plan(cfg, components, state)
    pools = check_run(cfg, components.unet, plan)  # every stage's data and freeze list, before any step

    results: dict[str, StageResult] = {}
    global_step = state.global_step if state else 0
    for planned in plan:
        resume_from = ckpt if state is not None and planned.index == STAGES.index(state.stage) else None
        run = _StageRun(
            cfg,
            planned.index,
            planned.name,
            planned.stage,
            components,
            accelerator,
            out,
            planned.start,
            resume_from,
            progress,
        )
        results[planned.name] = _run_stage(run, global_step, pools[planned.name])
        global_step += planned.stage.steps - planned.start
    accelerator.end_training()
    return results


def _plan(cfg: PolypsynthConfig, components: Components, state: TrainState | None) -> list[PlannedStage]:
    """The stages this run trains, each from its first step (a resumed stage from the checkpoint's)."""
    plan = []
    for index, name in enumerate(STAGES):
        stage: StageConfig = getattr(cfg.stage, name)
        if not stage.enabled or stage.steps == 0 or (name == "autoencoder" and components.pretrained_vae):
            continue
        start = 0
        if state is not None:
            done_index = STAGES.index(state.stage)
            if index < done_index or (index == done_index and state.stage_step >= stage.steps):
                continue
            if index == done_index:
                start = state.stage_step
        plan.append(PlannedStage(index, name, stage, start))
    return plan


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        return {k: v for key, val in node.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


@dataclass(frozen=True)
class _StageRun:
    """One stage's run: the recipe's configuration, which stage, the shared models and
    accelerator, and where it starts (`resume_from`: the checkpoint whose training state it loads)."""

    cfg: PolypsynthConfig
    index: int
    name: str
    stage: StageConfig
    components: Components
    accelerator: Accelerator
    out: Path
    start: int
    resume_from: Path | None
    progress: bool

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def _objective(run: _StageRun, pools: list[list[Record]]) -> Objective:
    records = [r for pool in pools for r in pool]
    dataset = RecordDataset(records, run.cfg.model.resolution, flip=False, prompts=run.cfg.prompts)
    run.components.vae.to(run.device)
    run.components.unet.to(run.device)
    run.components.text_encoder.to(run.device)
    if run.name == "autoencoder":
        return AutoencoderObjective(run.components, run.cfg, run.stage, dataset, run.device)
    objective = DiffusionObjective(
        run.components, run.cfg, run.stage, dataset, run.device, records, f"stage.{run.name}", run.progress
    )
    return objective.with_ema() if run.cfg.train.ema else objective


def _optimiser(run: _StageRun, params: list[torch.nn.Parameter]):
    """AdamW and the stage's learning-rate schedule."""
    # fused: one kernel for every parameter's update (about 7% of a tiny U-Net's CPU step)
    optimizer = torch.optim.AdamW(params, lr=run.stage.learning_rate, weight_decay=1e-2, fused=True)
    lr_scheduler = get_scheduler(
        {"constant": "constant_with_warmup", "cosine": "cosine"}[run.stage.lr_schedule],
        optimizer,
        num_warmup_steps=run.stage.lr_warmup_steps,
        num_training_steps=run.stage.steps,
    )
    return optimizer, lr_scheduler


def _batches(run: _StageRun, pools: list[list[Record]], dataset) -> Iterator[dict]:
    """The stage's micro-batches from its start step on, mixed from its pools (mix.py)."""
    stage = run.stage
    main_labels = [r.label for r in pools[0]] if stage.balance_classes else None
    plan = MixPlan.of([len(p) for p in pools], stage.replay_share, stage.unlabelled_share, main_labels)
    sampler = StepBatchSampler(
        plan,
        stage.batch_size,
        stage.gradient_accumulation,
        run.cfg.train.seed,
        run.index,
        start=run.start,
        end=stage.steps,
        process=run.accelerator.process_index,
    )
    return iter(DataLoader(dataset, batch_sampler=sampler, num_workers=run.cfg.train.num_workers))


def _step_loss(run: _StageRun, objective: Objective, model, batches: Iterator[dict], step: int) -> float:
    """One optimizer step's gradients over its micro-batches; the mean loss over them (and over
    processes: every process sees the same number, NaN included)."""
    accelerator, accumulation = run.accelerator, run.stage.gradient_accumulation
    gen = _step_generator(run.cfg.train.seed, run.index, step, accelerator.process_index)
    total = 0.0
    for micro in range(accumulation):
        batch = next(batches)
        last = micro == accumulation - 1
        sync = (
            accelerator.no_sync(model)
            if not last and accelerator.num_processes > 1
            else contextlib.nullcontext()
        )
        with sync, accelerator.autocast():
            loss = objective.loss(model, batch, step, gen)
            accelerator.backward(loss / accumulation)
        total += float(loss.detach()) / accumulation
    if accelerator.num_processes > 1:
        total = float(accelerator.reduce(torch.tensor([total], device=run.device), "mean")[0])
    if not math.isfinite(total):
        raise RunError(
            f"stage {run.name}: the loss became {total} at step {step + 1}; lower the learning rate"
        )
    return total


def _prepare(run: _StageRun, objective: Objective, params: list[torch.nn.Parameter]):
    """The optimiser and schedule (with the training state of `resume_from`), and the loss module
    as accelerate prepares it (DDP-wrapped with several processes)."""
    optimizer, lr_scheduler = _optimiser(run, params)
    if run.resume_from is not None:
        load_training_state(
            run.resume_from,
            objective.trainable,
            optimizer,
            lr_scheduler,
            ema=objective.ema,
            scaler=run.accelerator.scaler,
        )
        if objective.ema is not None:
            objective.ema.to(run.device)
    model, optimizer = run.accelerator.prepare(objective.module(), optimizer)
    return model, optimizer, lr_scheduler


def _run_stage(run: _StageRun, global_step: int, pools: list[list[Record]]) -> StageResult:
    setup_start = time.perf_counter()
    objective = _objective(run, pools)
    params = [p for p in objective.trainable.parameters() if p.requires_grad]
    model, optimizer, lr_scheduler = _prepare(run, objective, params)
    accelerator, stage = run.accelerator, run.stage
    batches = _batches(run, pools, objective.dataset)
    result = StageResult(run.name, [], [], setup_seconds=time.perf_counter() - setup_start)
    bar = tqdm(
        total=stage.steps,
        initial=run.start,
        desc=run.name,
        unit="step",
        disable=not run.progress or not accelerator.is_local_main_process,
    )
    for step in range(run.start, stage.steps):
        step_start = time.perf_counter()
        total = _step_loss(run, objective, model, batches, step)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        result.learning_rates.append(optimizer.param_groups[0]["lr"])
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        objective.after_step(step + 1, accelerator)
        result.losses.append(total)
        result.step_seconds += time.perf_counter() - step_start
        global_step += 1
        bar.update()
        bar.set_postfix(loss=f"{total:.4f}")
        if (step + 1) % run.cfg.train.log_every == 0 or step + 1 == stage.steps:
            accelerator.log(
                {f"{run.name}/loss": total, f"{run.name}/lr": lr_scheduler.get_last_lr()[0]}, step=global_step
            )
        due = step + 1 == stage.steps or (stage.checkpoint_every and (step + 1) % stage.checkpoint_every == 0)
        if due and accelerator.is_main_process:
            state = TrainState(
                run.name,
                step + 1,
                global_step,
                config_hash(run.cfg, through=run.name),
                ema=objective.ema is not None,
                processes=accelerator.num_processes,
            )
            trained = objective.saved(accelerator.unwrap_model(model))
            result.checkpoints.append(
                _save(run, state, trained, optimizer, lr_scheduler, ema=objective.ema, main_records=pools[0])
            )
        accelerator.wait_for_everyone()
    bar.close()
    objective.trainable.requires_grad_(False)
    return result


def _save(
    run: _StageRun, state: TrainState, trainable, optimizer, lr_scheduler, *, ema, main_records
) -> Path:
    """A checkpoint of the stage at `state` (EMA weights in the model folders when EMA is on;
    the raw weights in the training state); diffusion checkpoints also get their validation loss,
    class prompts and sample grid."""
    components, cfg = run.components, run.cfg
    unet = components.unet
    diffusion = state.stage != "autoencoder"

    def extras(folder):
        if not diffusion:
            return
        val = validation_loss(
            components,
            main_records,
            cfg.model.resolution,
            prompts=cfg.prompts,
            seed=cfg.train.seed,
            device=run.device,
        )
        meta = json.loads((folder / "polypsynth.json").read_text())
        class_prompts = {c: class_prompt(c, cfg.prompts) for c in CLASSES}
        (folder / "polypsynth.json").write_text(
            json.dumps({**meta, "val_loss": val, "class_prompts": class_prompts}, indent=2)
        )
        if cfg.train.sample_grid:
            write_sample_grid(components, state.stage, folder / "samples.png", cfg)

    raw = {k: v.detach().cpu().clone() for k, v in trainable.state_dict().items()}  # before the EMA swap
    if ema is not None:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
    was_training = unet.training
    unet.eval()
    try:
        return save_checkpoint(
            run.out,
            components,
            state,
            raw,
            optimizer,
            lr_scheduler=lr_scheduler,
            ema=ema,
            extras=extras,
            scaler=run.accelerator.scaler,
        )
    finally:
        unet.train(was_training)
        if ema is not None:
            ema.restore(unet.parameters())
