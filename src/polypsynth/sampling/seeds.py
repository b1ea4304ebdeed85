"""Per-image seeds: image i of a request with seed s starts from noise of its own CPU generator
seeded s + i, so an image does not depend on the batch it was packed into or on the backend."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def initial_noise(seeds: Sequence[int], latent_shape: Sequence[int]) -> torch.Tensor:
    """(N, C, h, w) float32 standard normal noise on the CPU, one generator per image."""
    return torch.stack(
        [torch.randn(tuple(latent_shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    )
