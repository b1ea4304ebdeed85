"""One sampling request, defined once, split into what to draw (`Draw`: class, count, seed, first
index) and how to draw it (`Settings`: steps, guidance, scheduler).

A user's request (`Request`) may leave settings out (`Given`); the side that holds the model fills
them from the model's defaults (a bundle records them in its manifest) with `Request.resolve`, the
only place defaults are applied, and gets `Params`: what the sampling loop, the batcher and an
image's provenance take. `Params.validate()` checks every field once and raises an error that
names it. The CLI options build a `Request` (cli/sampling.py `request_options`), and
serve/wire.py is the only place that knows its names on the wire."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from polypsynth.bundle_format import Settings
from polypsynth.errors import SamplingError
from polypsynth.sampling.schedulers import SCHEDULERS

__all__ = [
    "MAX_COUNT",
    "MAX_SEED",
    "MAX_STEPS",
    "Draw",
    "Given",
    "Params",
    "Request",
    "RequestError",
    "Settings",
    "make_params",
    "make_request",
]

MAX_COUNT = 100_000
MAX_SEED = 2**64 - 1  # torch generators take seeds up to 2**64 - 1
MAX_INDEX = 2**32 - 1  # an image's index travels as uint32
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
class Draw:
    """What to draw: images first_index .. first_index + count - 1 of class `class_name`, image i
    from seed + i (so an image does not depend on which request or server draws it)."""

    class_name: str
    count: int
    seed: int = 0
    first_index: int = 0

    def seed_of(self, position: int) -> int:
        """The seed of the request's image at `position` (0 .. count-1)."""
        return self.seed + self.first_index + position

    def validate(self, classes: Sequence[str], max_count: int = MAX_COUNT) -> None:
        if self.class_name not in classes:
            raise RequestError(
                "class_name", f"unknown class {self.class_name!r}; the model's classes: {', '.join(classes)}"
            )
        if not 0 < self.count <= max_count:
            raise RequestError("count", f"must be between 1 and {max_count}, got {self.count}")
        if self.first_index < 0 or self.first_index + self.count - 1 > MAX_INDEX:
            raise RequestError(
                "first_index",
                f"first_index + count - 1 must be at most {MAX_INDEX}, got {self.first_index + self.count - 1}",
            )
        if self.seed < 0:
            raise RequestError("seed", f"must be >= 0, got {self.seed}")
        if self.seed_of(self.count - 1) > MAX_SEED:
            raise RequestError("seed", self._seed_limit())

    def _seed_limit(self) -> str:
        largest = MAX_SEED - self.first_index - self.count + 1
        if self.first_index:
            return (
                f"image i uses seed + i, so seed + first_index + count - 1 must be at most {MAX_SEED} "
                f"(torch generators); got seed {self.seed} with first_index {self.first_index} and count "
                f"{self.count} (the largest seed for them is {largest})"
            )
        return (
            f"image i uses seed + i, so seed + count - 1 must be at most {MAX_SEED} (torch generators); "
            f"got seed {self.seed} with count {self.count} (the largest seed for {self.count} images is {largest})"
        )


@dataclass(frozen=True)
class Given:
    """How to draw, as a user gave it: a setting left out (None) is the model's default."""

    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None

    def over(self, defaults: Settings) -> Settings:
        """The settings given, the model's `defaults` for the rest (an empty scheduler is left out)."""
        return Settings(
            steps=defaults.steps if self.steps is None else self.steps,
            guidance=float(defaults.guidance if self.guidance is None else self.guidance),
            scheduler=self.scheduler or defaults.scheduler,
        )


@dataclass(frozen=True)
class Params:
    """A request resolved against its model: what to draw and exactly how."""

    draw: Draw
    settings: Settings = Settings()

    @property
    def class_name(self) -> str:
        return self.draw.class_name

    @property
    def count(self) -> int:
        return self.draw.count

    def validate(self, classes: Sequence[str], max_count: int = MAX_COUNT) -> Params:
        self.draw.validate(classes, max_count)
        check_settings(self.settings)
        return self


def check_settings(settings: Settings) -> None:
    """Every setting in range; the error names the first that is not."""
    if not 0 < settings.steps <= MAX_STEPS:
        raise RequestError("steps", f"must be between 1 and {MAX_STEPS}, got {settings.steps}")
    guidance = settings.guidance
    if not (isinstance(guidance, int | float) and math.isfinite(guidance) and guidance >= 0):
        raise RequestError("guidance", f"must be a finite number >= 0, got {guidance}")
    if settings.scheduler not in SCHEDULERS:
        raise RequestError(
            "scheduler",
            f"unknown scheduler {settings.scheduler!r}; valid schedulers: {', '.join(SCHEDULERS)}",
        )


@dataclass(frozen=True)
class Request:
    """What a user asks for: what to draw, and the settings they gave."""

    draw: Draw
    given: Given = Given()

    def resolve(self, defaults: Settings) -> Params:
        """The request with the model's `defaults` where a setting was left out (not yet validated)."""
        return Params(self.draw, self.given.over(defaults))


def make_request(
    class_name: str,
    count: int,
    *,
    seed: int = 0,
    first_index: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
) -> Request:
    """A Request spelled out in keywords (the client's `generate`, scripts, tests)."""
    return Request(Draw(class_name, count, seed, first_index), Given(steps, guidance, scheduler))


def make_params(class_name: str, count: int, **given) -> Params:
    """A request resolved against the built-in default settings: for code that samples directly."""
    return make_request(class_name, count, **given).resolve(Settings())
