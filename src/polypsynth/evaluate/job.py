"""One evaluation job, as `polypsynth evaluate` and the demo both run it: the checkpoints of a
samples folder, every number (run.evaluate), then the report folder (report.write_report)."""

from __future__ import annotations

import datetime
from pathlib import Path

from polypsynth import __version__
from polypsynth.data.records import list_images
from polypsynth.data.sources import load_csv_manifest
from polypsynth.evaluate.options import EvalOptions
from polypsynth.evaluate.report import write_report
from polypsynth.evaluate.results import EvalProvenance, Evaluation
from polypsynth.evaluate.run import evaluate
from polypsynth.evaluate.sets import RealData, lesion_groups, synthetic_checkpoints


def pool_images(pools: list[str | Path]) -> dict[str, list[Path]]:
    """Images a model may have trained on, by pool: every image under a folder, or every row of a
    CSV manifest (no labels needed), for the leakage check."""

    return {
        str(pool): [r.path for r in load_csv_manifest(Path(pool))]
        if Path(pool).is_file()
        else list_images(Path(pool), recursive=True)
        for pool in pools
    }


def evaluate_to_report(
    real: RealData,
    synthetic: str | Path,
    options: EvalOptions,
    out: str | Path,
    *,
    reconstructions: dict[str, list[Path]] | None = None,
    train_pools: dict[str, list[Path]] | None = None,
    overwrite: bool = False,
    sources: dict[str, str] | None = None,
) -> Evaluation:
    """Evaluate every checkpoint under `synthetic` against `real` and write the report to `out`;
    returns the evaluation (its numbers also in out/results.json). `sources` names where the real
    data and the reconstructions came from (paths as given), for the report's header."""
    lesion_of = lesion_groups(options.group_by, (sources or {}).get("real")) if options.group_by else None
    checkpoints = synthetic_checkpoints(synthetic)
    evaluation = evaluate(
        real,
        checkpoints,
        options,
        reconstructions=reconstructions,
        train_pools=train_pools,
        lesion_of=lesion_of,
    )
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    evaluation.provenance = EvalProvenance(
        polypsynth=__version__,
        date=stamp,
        real=(sources or {}).get("real", "given in code"),
        synthetic=str(synthetic),
        reconstructions=(sources or {}).get("reconstructions") if reconstructions else None,
        train_pools=list(train_pools or {}),
    )
    write_report(evaluation, Path(out), overwrite=overwrite)
    return evaluation
