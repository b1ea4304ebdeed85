"""What a training run needs, checked before its first step, so that a mistake in the last stage's
config costs seconds, not the earlier stages' hours: every stage that will run has data that loads
(paths, layouts, label maps, filters), its freeze prefixes name modules of the model that will be
trained, and every class prompt override names a class. Each error names the config key."""

from __future__ import annotations

from dataclasses import dataclass

from polypsynth.config import PolypsynthConfig, StageConfig
from polypsynth.data.records import CLASSES, Record
from polypsynth.data.sources import load_source
from polypsynth.errors import ConfigError, PolypsynthError
from polypsynth.train.freeze import check_prefixes


@dataclass(frozen=True)
class PlannedStage:
    """A stage the run will train: its index in STAGES, name, config and first step."""

    index: int
    name: str
    stage: StageConfig
    start: int


Pools = list[list[Record]]  # a stage's main, replay and unlabelled records


def _pools(planned: PlannedStage) -> Pools:
    where, stage = f"stage.{planned.name}", planned.stage
    if not stage.data:
        raise ConfigError(f"{where}.data is empty: the stage has nothing to train on")
    pools = []
    for field in ("data", "replay", "unlabelled"):
        records = []
        for i, src in enumerate(getattr(stage, field)):
            try:
                records += load_source(src)
            except ConfigError:
                raise
            except PolypsynthError as exc:
                raise ConfigError(f"{where}.{field}[{i}] ({src.kind} {src.path}): {exc}") from exc
        pools.append(records)
    return pools


def check_run(cfg: PolypsynthConfig, unet, plan: list[PlannedStage]) -> dict[str, Pools]:
    """Every planned stage's records (loaded once, handed to the stage), after the checks of the
    module docstring; `unet`: the model the stages will train."""
    unknown = [k for k in cfg.prompts if k not in CLASSES]
    if unknown:
        raise ConfigError(
            f"prompts: {', '.join(map(repr, unknown))} {'names' if len(unknown) == 1 else 'name'} no class; "
            f"prompts may be set for {', '.join(CLASSES)}"
        )
    for planned in plan:
        if planned.name != "autoencoder":
            check_prefixes(unet, planned.stage.freeze, where=f"stage.{planned.name}.freeze")
    return {planned.name: _pools(planned) for planned in plan}
