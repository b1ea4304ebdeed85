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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from polypsynth.config import PolypsynthConfig, StageConfig, to_dict
from polypsynth.data.dataset import RecordDataset
from polypsynth.data.prompts import class_prompt, prompt_for
from polypsynth.data.records import CLASSES
from polypsynth.data.sources import load_source
from polypsynth.errors import ConfigError
from polypsynth.models import Components, build_tiny, load_components, load_pretrained
from polypsynth.train.cache import build_latent_cache, encode_prompts
from polypsynth.train.checkpoint import (
    TrainState,
    list_checkpoints,
    load_training_state,
    read_state,
    resolve_resume,
    save_checkpoint,
)
from polypsynth.train.freeze import freeze_modules
from polypsynth.train.grid import write_sample_grid
from polypsynth.train.mix import MixPlan, StepBatchSampler
from polypsynth.train.run_folder import RunError, config_hash, on_cpu, prepare_out
from polypsynth.train.steps import (
    VaeObjective,
    diffusion_loss,
    random_crop,
    random_flips,
    sample_latents,
    text_context,
)
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


def _records(stage_name: str, stage: StageConfig):
    if not stage.data:
        raise ConfigError(f"stage.{stage_name}.data is empty: the stage has nothing to train on")
    pools = []
    for sources in (stage.data, stage.replay, stage.unlabelled):
        pools.append([r for src in sources for r in load_source(src)])
    return pools


def _step_generator(seed: int, stage_index: int, step: int, process: int) -> torch.Generator:
    value = np.random.SeedSequence([seed, stage_index, step, process]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(value))


@torch.no_grad()
def _fit_scaling_factor(vae, dataset, device, n: int = 256) -> float:
    """1 / std of the latents, so the diffusion model sees unit-variance inputs (as SD's 0.18215)."""
    loader = DataLoader(dataset, batch_size=32, shuffle=False)
    latents, seen = [], 0
    for batch in loader:
        latents.append(vae.encode(batch["pixel_values"].to(device, vae.dtype)).latent_dist.mean.float().cpu())
        seen += len(batch["pixel_values"])
        if seen >= n:
            break
    return float(1.0 / torch.cat(latents).std().clamp_min(1e-6))


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
        from accelerate import PartialState

        if fresh and not list_checkpoints(out) and PartialState(cpu=on_cpu()).is_main_process:
            shutil.rmtree(out, ignore_errors=True)  # run.json and empty logs: nothing to resume
        raise


def _train(cfg: PolypsynthConfig, out: Path, resume: str | None, progress: bool) -> dict[str, StageResult]:
    from accelerate import Accelerator

    prepare_out(out, cfg, resume)
    ckpt = resolve_resume(out, resume) if resume else None
    state = read_state(ckpt) if ckpt else None
    if state is not None and state.config_hash != config_hash(cfg):
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

    results: dict[str, StageResult] = {}
    global_step = state.global_step if state else 0
    for index, name in enumerate(STAGES):
        stage: StageConfig = getattr(cfg.stage, name)
        if not stage.enabled or stage.steps == 0 or (name == "autoencoder" and components.pretrained_vae):
            continue
        start, resume_from = 0, None
        if state is not None:
            done_index = STAGES.index(state.stage)
            if index < done_index or (index == done_index and state.stage_step >= stage.steps):
                continue
            if index == done_index:
                start, resume_from = state.stage_step, ckpt
        result = _run_stage(
            cfg, index, name, stage, components, accelerator, out, global_step, start, resume_from, progress
        )
        results[name] = result
        global_step += stage.steps - start
    accelerator.end_training()
    return results


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        return {k: v for key, val in node.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def _run_stage(
    cfg, index, name, stage, components, accelerator, out, global_step, start, resume_from, progress
):
    from accelerate.utils import broadcast
    from diffusers import UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    device = accelerator.device
    setup_start = time.perf_counter()
    pools = _records(name, stage)
    all_records = [r for pool in pools for r in pool]
    main_labels = [r.label for r in pools[0]] if stage.balance_classes else None
    plan = MixPlan.of([len(p) for p in pools], stage.replay_share, stage.unlabelled_share, main_labels)
    dataset = RecordDataset(all_records, cfg.model.resolution, flip=False, prompts=cfg.prompts)
    vae, unet = components.vae.to(device), components.unet.to(device)
    components.text_encoder.to(device)

    autoencoder = name == "autoencoder"
    if autoencoder:
        trainable = vae
        vae.requires_grad_(True).train()
        unet.requires_grad_(False)
    else:
        trainable = unet
        vae.requires_grad_(False).eval()
        unet.requires_grad_(True).train()
        freeze_modules(unet, stage.freeze, where=f"stage.{name}.freeze")
        if cfg.train.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        embeddings = encode_prompts(components, [prompt_for(r, cfg.prompts) for r in all_records], device)
        if cfg.train.latent_cache:
            dataset = build_latent_cache(vae, dataset, device, progress=progress)
    params = [p for p in trainable.parameters() if p.requires_grad]
    # fused: one kernel for every parameter's update (about 7% of a tiny U-Net's CPU step)
    optimizer = torch.optim.AdamW(params, lr=stage.learning_rate, weight_decay=1e-2, fused=True)
    lr_scheduler = get_scheduler(
        {"constant": "constant_with_warmup", "cosine": "cosine"}[stage.lr_schedule],
        optimizer,
        num_warmup_steps=stage.lr_warmup_steps,
        num_training_steps=stage.steps,
    )
    ema = None
    if cfg.train.ema and not autoencoder:
        ema = EMAModel(
            unet.parameters(),
            decay=cfg.train.ema_decay,
            model_cls=UNet2DConditionModel,
            model_config=unet.config,
        )
    if resume_from is not None:
        load_training_state(resume_from, trainable, optimizer, lr_scheduler, ema, accelerator.scaler)
        if ema is not None:
            ema.to(device)

    # The module whose forward computes the loss: DDP wraps it when there are several processes.
    model, optimizer = accelerator.prepare(
        VaeObjective(vae, stage.kl_weight) if autoencoder else unet, optimizer
    )
    sampler = StepBatchSampler(
        plan,
        stage.batch_size,
        stage.gradient_accumulation,
        cfg.train.seed,
        index,
        start,
        stage.steps,
        process=accelerator.process_index,
    )
    batches = iter(DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.train.num_workers))

    losses, checkpoints, learning_rates = [], [], []
    setup_seconds, step_seconds = time.perf_counter() - setup_start, 0.0
    bar = tqdm(
        total=stage.steps,
        initial=start,
        desc=name,
        unit="step",
        disable=not progress or not accelerator.is_local_main_process,
    )
    for step in range(start, stage.steps):
        step_start = time.perf_counter()
        gen = _step_generator(cfg.train.seed, index, step, accelerator.process_index)
        total = 0.0
        for micro in range(stage.gradient_accumulation):
            batch = next(batches)
            last = micro == stage.gradient_accumulation - 1
            sync = (
                accelerator.no_sync(model)
                if not last and accelerator.num_processes > 1
                else contextlib.nullcontext()
            )
            with sync, accelerator.autocast():
                if autoencoder:
                    pixels = batch["pixel_values"].to(device)
                    if cfg.train.flip:
                        (pixels,) = random_flips([pixels], gen)
                    cropping = step < round(stage.crop_share * stage.steps)
                    loss = model(random_crop(pixels, stage.crop if cropping else None, gen), gen)
                else:
                    latents = sample_latents(batch, vae, gen, cfg.train.flip, device)
                    context = text_context(
                        list(batch["prompt"]), embeddings, gen, cfg.train.cond_dropout, device
                    )
                    loss = diffusion_loss(
                        model, components.scheduler, latents, context, gen, cfg.train.min_snr_gamma
                    )
                accelerator.backward(loss / stage.gradient_accumulation)
            total += float(loss.detach()) / stage.gradient_accumulation
        if accelerator.num_processes > 1:  # every process sees the same mean (and the same NaN)
            total = float(accelerator.reduce(torch.tensor([total], device=device), "mean")[0])
        if not math.isfinite(total):
            raise RunError(
                f"stage {name}: the loss became {total} at step {step + 1}; lower the learning rate"
            )
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        learning_rates.append(optimizer.param_groups[0]["lr"])
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(unet.parameters())
        losses.append(total)
        step_seconds += time.perf_counter() - step_start
        global_step += 1
        stage_step = step + 1
        bar.update()
        bar.set_postfix(loss=f"{total:.4f}")
        if stage_step % cfg.train.log_every == 0 or stage_step == stage.steps:
            accelerator.log(
                {f"{name}/loss": total, f"{name}/lr": lr_scheduler.get_last_lr()[0]}, step=global_step
            )
        due = stage_step == stage.steps or (
            stage.checkpoint_every and stage_step % stage.checkpoint_every == 0
        )
        if autoencoder and stage_step == stage.steps:
            # Every process needs the scale for the later stages: fitted everywhere, rank 0's kept.
            vae.eval()
            factor = torch.tensor([_fit_scaling_factor(vae, dataset, device)], device=device)
            vae.register_to_config(scaling_factor=float(broadcast(factor, from_process=0)[0]))
        if due and accelerator.is_main_process:
            state = TrainState(
                name,
                stage_step,
                global_step,
                config_hash(cfg),
                ema=ema is not None,
                processes=accelerator.num_processes,
            )
            unwrapped = accelerator.unwrap_model(model)
            trained = unwrapped.vae if autoencoder else unwrapped
            checkpoints.append(
                _save(
                    out,
                    components,
                    state,
                    trained,
                    optimizer,
                    lr_scheduler,
                    ema,
                    cfg,
                    pools[0],
                    device,
                    accelerator.scaler,
                )
            )
        accelerator.wait_for_everyone()
    bar.close()
    trainable.requires_grad_(False)
    return StageResult(name, losses, checkpoints, step_seconds, setup_seconds, learning_rates)


def _save(
    out, components, state, trainable, optimizer, lr_scheduler, ema, cfg, main_records, device, scaler=None
):
    unet = components.unet
    diffusion = state.stage != "autoencoder"

    def extras(folder):
        if not diffusion:
            return
        val = validation_loss(
            components, main_records, cfg.model.resolution, cfg.prompts, cfg.train.seed, device=device
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
            out, components, state, raw, optimizer, lr_scheduler, ema, extras=extras, scaler=scaler
        )
    finally:
        unet.train(was_training)
        if ema is not None:
            ema.restore(unet.parameters())
