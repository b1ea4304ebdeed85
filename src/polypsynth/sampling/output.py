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

from polypsynth.atomic import atomic_write_bytes
from polypsynth.errors import PolypsynthError


@dataclass(frozen=True)
class Provenance:
    """What made an image; identical for the images of one request except index and seed."""

    model_hash: str
    class_name: str
    scheduler: str
    steps: int
    guidance: float
    backend: str


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
