"""Local generation into an image folder (the `polypsynth sample` command; `generate`, its gRPC twin, is serve/to_folder.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from polypsynth.atomic import atomic_dir, prepare_target
from polypsynth.sampling.loop import image_batches
from polypsynth.sampling.output import ImageFolderWriter, Provenance
from polypsynth.sampling.request import Params


def sample_to_folder(
    model,
    params: Params,
    out: Path,
    *,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write OUT/<class>/ completely or not at all with an open model (`open_model`); returns the
    class folder. `params` is the request resolved against the model's defaults."""
    final = Path(out) / params.class_name
    prepare_target(final, overwrite, "sample folder")
    params.validate(model.classes)
    provenance = Provenance.of(params, model_hash=model.model_hash, backend=model.backend_name)
    with atomic_dir(final, overwrite=overwrite, what="sample folder") as tmp:
        writer = ImageFolderWriter(tmp, provenance, params.draw.seed)
        for first, images in image_batches(model, params, batch_size):  # one batch in memory at a time
            for j, pixels in enumerate(images):
                writer.write(first + j, params.draw.seed_of(first + j), pixels)
            if progress:
                progress(len(images))
    return final
