"""One sampling request, defined once: what `sample`, `generate`, the gRPC service and the
batcher all pass around. Its settings not given by the user come from the model's defaults (a
bundle records them in its manifest); `validate()` checks every field and raises an error that
names it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from polypsynth.errors import SamplingError
from polypsynth.sampling.schedulers import SCHEDULERS

MAX_COUNT = 100_000
MAX_SEED = 2**64 - 1  # torch generators take seeds up to 2**64 - 1
# At the model's 1000 training timesteps diffusers' DDIM, DPM-Solver++ and PNDM index past their
# tables, and DPM-Solver++ turns NaN at 999: the limit keeps well clear of both (every scheduler
# here converges in 20-100 steps; tested at the limit).
MAX_STEPS = 500


class RequestError(SamplingError):
    """One field of a request is out of range; `field` names it (the CLI option, the proto field)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Defaults:
    """A model's sampling settings where a request gives none. The guidance default is moderate
    (3.0): higher scales show the class more strongly and trade away variety."""

    steps: int = 25
    guidance: float = 3.0
    scheduler: str = "dpm++"

    @classmethod
    def from_dict(cls, given: dict) -> Defaults:
        """A bundle's recorded defaults (Manifest.defaults); one written before they were recorded has these."""
        return cls(**{k: given[k] for k in ("steps", "guidance", "scheduler") if k in given})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SamplingParams:
    class_name: str
    count: int
    seed: int = 0
    steps: int = Defaults.steps
    guidance: float = Defaults.guidance
    scheduler: str = Defaults.scheduler

    @classmethod
    def with_defaults(
        cls,
        defaults: Defaults,
        class_name: str,
        count: int,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        scheduler: str | None = None,
    ) -> SamplingParams:
        """The request with every setting left out (None, or an empty scheduler) taken from `defaults`."""
        return cls(
            class_name,
            count,
            seed,
            defaults.steps if steps is None else steps,
            float(defaults.guidance if guidance is None else guidance),
            scheduler or defaults.scheduler,
        )

    def validate(self, classes: Sequence[str], max_count: int = MAX_COUNT) -> SamplingParams:
        if self.class_name not in classes:
            raise RequestError(
                "class_name", f"unknown class {self.class_name!r}; the model's classes: {', '.join(classes)}"
            )
        if not 0 < self.count <= max_count:
            raise RequestError("count", f"must be between 1 and {max_count}, got {self.count}")
        if not 0 < self.steps <= MAX_STEPS:
            raise RequestError("steps", f"must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not (
            isinstance(self.guidance, int | float) and math.isfinite(self.guidance) and self.guidance >= 0
        ):
            raise RequestError("guidance", f"must be a finite number >= 0, got {self.guidance}")
        if self.scheduler not in SCHEDULERS:
            raise RequestError(
                "scheduler",
                f"unknown scheduler {self.scheduler!r}; valid schedulers: {', '.join(SCHEDULERS)}",
            )
        if self.seed < 0:
            raise RequestError("seed", f"must be >= 0, got {self.seed}")
        if self.seed + self.count - 1 > MAX_SEED:
            raise RequestError(
                "seed",
                f"image i uses seed + i, so seed + count - 1 must be at most {MAX_SEED} (torch generators); "
                f"got seed {self.seed} with count {self.count}",
            )
        return self
