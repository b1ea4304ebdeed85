"""Write a folder completely or not at all.

Every artefact that a later step trusts (phantom data sets, checkpoints, bundles, reports, sample
folders) is written into a hidden temporary folder beside its destination and renamed into place
only when complete, so an interrupted run never leaves a folder that looks whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from polypsynth.errors import PolypsynthError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_empty_target(path: Path, overwrite: bool, what: str = "output folder") -> None:
    """Refuse a destination that exists and is not empty, unless overwriting was asked for."""
    if path.exists() and not path.is_dir():
        raise PolypsynthError(f"{what} {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise PolypsynthError(f"{what} {path} is not empty; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_dir(
    final: str | os.PathLike, overwrite: bool = False, what: str = "output folder"
) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    ensure_empty_target(final, overwrite, what)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should read like any folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


def replace_dir(src: Path, final: Path) -> None:
    """Move a finished folder into place, removing what was there before."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(src, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file through a temporary sibling and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
