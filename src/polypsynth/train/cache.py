"""Latent cache: encode every training image with the VAE once and train from the stored latent
distributions (mean and log-variance); prompt embeddings are always computed once per stage,
since the text encoder is frozen."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from polypsynth.data.prompts import UNCONDITIONAL_PROMPT
from polypsynth.models.loading import encode_texts


def encode_prompts(components, prompts: Sequence[str], device) -> dict[str, torch.Tensor]:
    """Text-encoder hidden states per unique prompt, the unconditional one included (the prompt
    dropped for classifier-free guidance: the same one sampling uses)."""
    unique = sorted(set(prompts) | {UNCONDITIONAL_PROMPT})
    hidden = encode_texts(components, unique, device)
    return {p: hidden[i] for i, p in enumerate(unique)}


class CachedLatents(Dataset):
    """Items like RecordDataset's, with `latent_mean` / `latent_logvar` instead of pixels."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor, meta: list[dict]):
        self.mean, self.logvar, self.meta = mean, logvar, meta

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, index: int) -> dict:
        return {"latent_mean": self.mean[index], "latent_logvar": self.logvar[index], **self.meta[index]}


@torch.no_grad()
def build_latent_cache(
    vae, dataset: Dataset, device, batch_size: int = 32, progress: bool = True
) -> CachedLatents:
    vae = vae.to(device).eval()
    means, logvars, meta = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="latent cache", unit="batch", disable=not progress):
        dist = vae.encode(batch["pixel_values"].to(device, vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        logvars.append(dist.logvar.float().cpu())
        meta += [
            {"prompt": p, "label": lab, "source": s, "index": int(i)}
            for p, lab, s, i in zip(
                batch["prompt"], batch["label"], batch["source"], batch["index"], strict=True
            )
        ]
    return CachedLatents(torch.cat(means), torch.cat(logvars), meta)
