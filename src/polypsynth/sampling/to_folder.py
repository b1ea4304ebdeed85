"""Local generation into an image folder (the `polypsynth sample` command; `generate`, its gRPC twin, is serve/to_folder.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from polypsynth.atomic import atomic_dir, prepare_target
from polypsynth.sampling.loop import image_batches
from polypsynth.sampling.model import open_model
from polypsynth.sampling.output import ImageFolderWriter, Provenance
from polypsynth.sampling.request import SamplingParams


def provenance_of(model, params: SamplingParams) -> Provenance:
    return Provenance(
        model.model_hash,
        params.class_name,
        params.scheduler,
        params.steps,
        float(params.guidance),
        model.backend_name,
    )


def sample_to_folder(
    model_path,
    backend: str,
    params: SamplingParams,
    out: Path,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    model=None,
    **options,
) -> Path:
    """Write OUT/<class>/ completely or not at all; returns the class folder."""
    final = Path(out) / params.class_name
    prepare_target(final, overwrite, "sample folder")
    model = model or open_model(model_path, backend, **options)
    params.validate(model.classes)
    with atomic_dir(final, overwrite=overwrite, what="sample folder") as tmp:
        writer = ImageFolderWriter(tmp, provenance_of(model, params), params.seed)
        for first, images in image_batches(model, params, batch_size):  # one batch in memory at a time
            for j, pixels in enumerate(images):
                writer.write(first + j, params.seed + first + j, pixels)
            if progress:
                progress(len(images))
    return final
