"""Write a folder completely or not at all, and say whose it is.

Every artefact that a later step trusts (phantom data sets, checkpoints, bundles, reports, sample
folders) is written into a hidden temporary folder beside its destination and renamed into place
only when complete, so an interrupted run never leaves a folder that looks whole.

Folders written bit by bit instead (`polypsynth generate`, which resumes) say their state with
files: `INCOMPLETE.json` while images are missing (with the command that completes them), and
`.polypsynth.lock`, locked while a process writes. Every finished folder carries `.polypsynth`,
and `--overwrite` replaces only folders that carry it (or the incomplete marker): never a folder
of someone else's files.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from polypsynth import __version__
from polypsynth.errors import PolypsynthError

MARKER = ".polypsynth"  # written last into every finished folder
INCOMPLETE = "INCOMPLETE.json"  # present while a folder written bit by bit lacks images
LOCK = ".polypsynth.lock"  # flock-ed while a process writes into the folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_marker(folder: Path, what: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    atomic_write_text(
        Path(folder) / MARKER,
        json.dumps({"written_by": f"polypsynth {__version__}", "what": what, "date": stamp}) + "\n",
    )


def read_marker(folder: Path) -> dict:
    """What FOLDER's marker says ({"written_by", "what", "date"}), or {} without a readable one."""
    try:
        found = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def read_incomplete(folder: Path) -> dict | None:
    """The incomplete marker's content ({"have", "count", "complete_with"}), or None."""
    path = Path(folder) / INCOMPLETE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"have": None, "count": None, "complete_with": None}


def incomplete_text(folder: Path, marker: dict) -> str:
    have, count, command = marker.get("have"), marker.get("count"), marker.get("complete_with")
    held = f" ({have} of {count} images)" if have is not None and count else ""
    fix = f"complete it with: {command}" if command else "re-run the generate command that wrote it"
    return f"{folder} is an unfinished `polypsynth generate` folder{held}; {fix}"


def ensure_empty_target(path: Path, overwrite: bool, what: str = "output folder") -> None:
    """Refuse a destination that exists and is not empty, unless overwriting was asked for and
    the folder is polypsynth's own (finished, or unfinished with its marker) and no one writes it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PolypsynthError(f"{what} {path} exists and is not a folder")
    if not path.is_dir() or not any(path.iterdir()):
        return
    writer = lock_holder(path)
    if writer is not None:
        raise PolypsynthError(f"{what} {path} is being written by another polypsynth process ({writer})")
    incomplete = read_incomplete(path)
    if not overwrite:
        why = f" ({incomplete_text(path, incomplete)})" if incomplete else ""
        raise PolypsynthError(f"{what} {path} is not empty{why}; pass --overwrite to replace it")
    if not (path / MARKER).is_file() and incomplete is None:
        raise PolypsynthError(
            f"{what} {path} was not written by polypsynth (it has no {MARKER} marker): --overwrite replaces "
            "only polypsynth's own folders; remove it yourself or choose another path"
        )


class FolderLock:
    """An exclusive, non-blocking flock on FOLDER/.polypsynth.lock: a second writer is refused
    with the first one's pid. The kernel drops the lock when its process dies, so a killed run
    never leaves a folder locked."""

    def __init__(self, folder: Path, what: str = "folder"):
        self.path = Path(folder) / LOCK
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> FolderLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = lock_holder(self.path.parent) or "another process"
                raise PolypsynthError(
                    f"{self.what} {self.path.parent} is being written by another polypsynth process ({holder}); "
                    "two writers would mix their images: wait for it or choose another --out"
                ) from None
            # A holder unlinks the file as it lets go: a lock won on the file it unlinked (opened
            # just before) guards nothing, since the next writer creates and locks a new one.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still holding the lock
            os.close(self.fd)
            self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        held, named = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def lock_holder(folder: Path) -> str | None:
    """'pid N' when a live process holds FOLDER's lock, else None."""
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "pid unknown"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(
    final: str | os.PathLike, overwrite: bool = False, what: str = "output folder"
) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    ensure_empty_target(final, overwrite, what)
    created = make_parents(final.parent, what)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should read like any folder
        try:
            yield tmp
            write_marker(tmp, what)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_dir(tmp, final)
    except BaseException:
        remove_empty(final.parent, created)
        raise


def make_parents(folder: Path, what: str = "output folder") -> Path | None:
    """mkdir -p FOLDER; returns the outermost folder it created (None if FOLDER existed), so that
    a failed command can take back what it made. An unwritable place is a one-line error."""
    folder = Path(folder)
    created = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        created = candidate
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # writable, not only present
            pass
    except OSError as exc:
        remove_empty(folder, created)
        raise PolypsynthError(f"cannot write the {what} in {folder}: {exc.strerror or exc}") from exc
    return created


def prepare_target(final: str | os.PathLike, overwrite: bool, what: str = "output folder") -> None:
    """The checks atomic_dir makes, made before the work: FINAL may be (re)placed and written."""
    ensure_empty_target(Path(final), overwrite, what)
    check_writable(Path(final), what)


def check_writable(final: Path, what: str = "output folder") -> None:
    """Fail now, not after an hour's work, when FINAL's place cannot be written; creates nothing."""
    parent = Path(final).parent
    remove_empty(parent, make_parents(parent, what))


def remove_empty(folder: Path, created: Path | None) -> None:
    """Remove FOLDER and its parents up to `created` (the outermost one a command made) while empty."""
    if created is None:
        return
    folder, created = Path(folder), Path(created)
    for candidate in (folder, *folder.parents):
        try:
            candidate.rmdir()
        except OSError:
            return
        if candidate == created:
            return


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
