"""Which images each step trains on: the stage's data mixed with replay and unlabelled images.

Batches are a pure function of (seed, stage, step, micro-batch): every item first draws its pool
(main / replay / unlabelled) with the configured shares, then an image of that pool. Resuming at
step k therefore sees exactly the batches an uninterrupted run sees, with no sampler state saved.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Sampler

POOLS = ("main", "replay", "unlabelled")


@dataclass(frozen=True)
class MixPlan:
    sizes: tuple[int, int, int]  # images in the main, replay and unlabelled pools
    shares: tuple[float, float, float]  # probability of drawing each pool
    # Cumulative draw weights of the main images (None: uniform); an array built once per stage.
    main_cdf: np.ndarray | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        sizes: Sequence[int],
        replay_share: float,
        unlabelled_share: float,
        main_labels: Sequence[str] | None = None,
    ) -> MixPlan:
        """`main_labels`: the main pool's labels, to draw every label equally often."""
        shares = [1.0 - replay_share - unlabelled_share, replay_share, unlabelled_share]
        shares = [s if n else 0.0 for s, n in zip(shares, sizes, strict=True)]
        total = sum(shares)
        cdf = None
        if main_labels is not None:
            labels, inverse, counts = np.unique(
                np.asarray(main_labels), return_inverse=True, return_counts=True
            )
            weights = 1.0 / (len(labels) * counts[inverse])
            cdf = np.cumsum(weights)
        n0, n1, n2 = sizes
        s0, s1, s2 = (s / total for s in shares)
        return cls((n0, n1, n2), (s0, s1, s2), cdf)

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]])


def step_seed(seed: int, stage: int, step: int, extra: int = 0) -> list[int]:
    return [seed, stage, step, extra]


def batch_indices(
    plan: MixPlan, batch_size: int, seed: int, stage: int, step: int, *, micro: int = 0, process: int = 0
) -> list[int]:
    """Indices into the concatenation main + replay + unlabelled for one micro-batch of one process."""
    rng = np.random.default_rng([*step_seed(seed, stage, step, 1000 + micro), process])
    pools = rng.choice(len(POOLS), size=batch_size, p=plan.shares)
    sizes = np.asarray(plan.sizes)
    within = (rng.random(batch_size) * sizes[pools]).astype(np.int64)
    if plan.main_cdf is not None:  # class-balanced main draws: an extra stream, the uniform path is unchanged
        main = pools == 0
        cdf = plan.main_cdf
        u = rng.random(batch_size)[main] * cdf[-1]
        within[main] = np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
    return (plan.offsets()[pools] + within).tolist()


class StepBatchSampler(Sampler[list[int]]):
    """Micro-batches for steps [start, end) of a stage, `accumulation` per optimizer step. Each
    process of a multi-GPU run draws its own batches (no sharding, so none runs out early)."""

    def __init__(
        self,
        plan: MixPlan,
        batch_size: int,
        accumulation: int,
        seed: int,
        stage: int,
        *,
        start: int,
        end: int,
        process: int = 0,
    ):
        self.plan, self.batch_size, self.accumulation = plan, batch_size, accumulation
        self.seed, self.stage, self.start, self.end, self.process = seed, stage, start, end, process

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.accumulation

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            for micro in range(self.accumulation):
                yield batch_indices(
                    self.plan, self.batch_size, self.seed, self.stage, step, micro=micro, process=self.process
                )
