"""Image folders with provenance: `DIR/<class>/<index>.png` with the request in the PNG text
chunks, and `DIR/<class>/samples.jsonl` with one line per image. Written by `polypsynth sample`
and by the gRPC client, so both produce the same folders."""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from polypsynth.atomic import (
    INCOMPLETE,
    MARKER,
    FolderLock,
    atomic_write_bytes,
    atomic_write_text,
    make_parents,
    remove_empty,
    write_marker,
)
from polypsynth.errors import PolypsynthError
from polypsynth.sampling.request import Params


@dataclass(frozen=True)
class Provenance:
    """What made an image; identical for the images of one request except index and seed."""

    model_hash: str
    class_name: str
    scheduler: str
    steps: int
    guidance: float
    backend: str

    @classmethod
    def of(cls, params: Params, *, model_hash: str, backend: str) -> Provenance:
        """The provenance of a resolved request's images drawn by this model and backend."""
        settings = params.settings
        return cls(
            model_hash=model_hash,
            class_name=params.class_name,
            scheduler=settings.scheduler,
            steps=settings.steps,
            guidance=float(settings.guidance),
            backend=backend,
        )


def image_name(index: int) -> str:
    return f"{index:06d}.png"


def encode_png(pixels: np.ndarray, provenance: Provenance, index: int, seed: int) -> bytes:
    info = PngInfo()
    for key, value in {**asdict(provenance), "index": index, "seed": seed}.items():
        info.add_text(f"polypsynth:{key}", str(value))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", pnginfo=info, compress_level=3)
    return buf.getvalue()


def read_provenance(path: str | os.PathLike) -> dict[str, str]:
    with Image.open(path) as im:
        text: dict[str, str] = getattr(im, "text", {})  # PNG text chunks
        return {k.split(":", 1)[1]: v for k, v in text.items() if k.startswith("polypsynth:")}


class ImageFolderWriter:
    """Writes one class folder image by image; each PNG lands atomically, then its jsonl line."""

    def __init__(self, folder: str | os.PathLike, provenance: Provenance, seed: int):
        self.folder = Path(folder)
        self.provenance, self.seed = provenance, seed
        self.folder.mkdir(parents=True, exist_ok=True)
        self._drop_torn_line()
        self.check_compatible()

    def _drop_torn_line(self) -> None:
        """A writer killed mid-append leaves a partial last line: drop it (its PNG is rewritten)."""
        log = self.folder / "samples.jsonl"
        if not log.is_file():
            return
        data = log.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(log, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def check_compatible(self) -> None:
        """Refuse a folder holding images of another model, class, seed or sampling setting."""
        log = self.folder / "samples.jsonl"
        if not log.is_file():
            return
        expected = {**asdict(self.provenance), "request_seed": self.seed}
        for line in log.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for key, value in expected.items():
                if row.get(key) != value:
                    raise PolypsynthError(
                        f"{self.folder} holds images with {key}={row.get(key)!r}, this request has {value!r}; "
                        "refusing to mix them (use another --out)"
                    )
            break

    def done(self) -> set[int]:
        """Indices already on disk (complete PNG and jsonl line), for resuming."""
        log = self.folder / "samples.jsonl"
        if not log.is_file():
            return set()
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return {r["index"] for r in rows if (self.folder / r["file"]).is_file()}

    def write(
        self, index: int, seed: int, pixels: np.ndarray | None = None, png: bytes | None = None
    ) -> Path:
        path = self.folder / image_name(index)
        if png is None:
            if pixels is None:
                raise ValueError("write: pass the image's pixels or its PNG bytes")
            png = encode_png(pixels, self.provenance, index, seed)
        atomic_write_bytes(path, png)
        row = {
            "file": path.name,
            "index": index,
            "seed": seed,
            "request_seed": self.seed,
            **asdict(self.provenance),
        }
        with open(self.folder / "samples.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        return path


class ResumableFolder:
    """OUT/<class>/ as `polypsynth generate` writes it, image by image across runs: locked while
    written (a second writer is refused), marked INCOMPLETE.json with the command that completes
    it until images 0 .. count-1 are all there, then marked finished (.polypsynth). A folder this
    writer created and never wrote an image into is removed when the request fails, with the
    parent folders it created, so a refused request leaves nothing behind."""

    def __init__(
        self, folder: str | os.PathLike, provenance: Provenance, seed: int, count: int, complete_with: str
    ):
        self.folder = Path(folder)
        self.provenance, self.seed, self.count = provenance, seed, count
        self.complete_with = complete_with
        self.created: Path | None = None
        self.lock: FolderLock | None = None

    def __enter__(self) -> ResumableFolder:
        self.created = make_parents(self.folder, "output folder")
        try:
            self.lock = FolderLock(self.folder, "output folder").__enter__()
            self.writer = ImageFolderWriter(self.folder, self.provenance, self.seed)
            self.done = self.writer.done()
            if self.missing():
                (self.folder / MARKER).unlink(missing_ok=True)
                self._mark()
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def missing(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.done]

    def write(self, index: int, seed: int, png: bytes) -> bool:
        """Write image `index` unless it is already there; True when written."""
        if index in self.done:
            return False
        self.writer.write(index, seed, png=png)
        self.done.add(index)
        return True

    def _mark(self) -> None:
        have = self.count - len(self.missing())
        marker = {"have": have, "count": self.count, "complete_with": self.complete_with}
        atomic_write_text(self.folder / INCOMPLETE, json.dumps(marker, indent=2) + "\n")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._release(failed=exc_type is not None)

    def _release(self, failed: bool) -> None:
        try:
            if hasattr(self, "done"):  # the folder was opened: say what state it is in
                if not self.missing():
                    (self.folder / INCOMPLETE).unlink(missing_ok=True)
                    write_marker(self.folder, "generate folder")
                elif self.created is not None and not self.done:  # made for nothing
                    (self.folder / INCOMPLETE).unlink(missing_ok=True)
                else:
                    self._mark()
        finally:
            if self.lock is not None:
                self.lock.__exit__(None, None, None)
                self.lock = None
            if failed:
                remove_empty(self.folder, self.created)
