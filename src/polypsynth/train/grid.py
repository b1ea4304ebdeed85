"""A small sample grid beside each checkpoint: rows are the stage's prompts, columns seeds."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from polypsynth.data.prompts import class_prompt, stage1_prompt
from polypsynth.data.records import CLASSES


def grid_prompts(stage_name: str, overrides=None) -> list[str]:
    if stage_name == "finetune":
        return [class_prompt(c, overrides) for c in CLASSES]
    return [stage1_prompt(True, "sharp"), stage1_prompt(False, "sharp")]


@torch.no_grad()
def write_sample_grid(
    components, stage_name: str, path, cfg, *, columns: int = 4, steps: int = 20, guidance: float = 3.0
):
    from diffusers import DDIMScheduler

    pipe = components.pipeline()
    pipe.scheduler = DDIMScheduler.from_config(components.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    size = cfg.model.resolution
    rows = []
    for prompt in grid_prompts(stage_name, cfg.prompts):
        generators = [torch.Generator().manual_seed(cfg.train.seed + i) for i in range(columns)]
        images = pipe(
            [prompt] * columns,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            height=size,
            width=size,
            output_type="np",
        ).images
        rows.append(np.concatenate(list(images), axis=1))
    grid = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
    Image.fromarray(grid).save(path)
