"""The folder lock under the race its unlink-on-release opens: a writer that opened the lock
file just before its holder let go (and unlinked it) must not count the lock it then wins."""

import fcntl
import os

import pytest

from polypsynth import atomic
from polypsynth.atomic import LOCK, FolderLock
from polypsynth.errors import PolypsynthError


def test_a_lock_won_on_the_unlinked_file_is_taken_again(tmp_path, monkeypatch):
    first = FolderLock(tmp_path, "output folder").__enter__()
    real_flock = fcntl.flock
    calls = []

    def flock(fd, op):  # the holder lets go between the second writer's open and its flock
        calls.append(fd)
        if len(calls) == 1:
            first.__exit__(None, None, None)
        return real_flock(fd, op)

    monkeypatch.setattr(atomic.fcntl, "flock", flock)
    second = FolderLock(tmp_path, "output folder").__enter__()
    monkeypatch.setattr(atomic.fcntl, "flock", real_flock)
    assert len(calls) == 2  # won on the unlinked file, let go, then won on the new one
    assert os.fstat(second.fd).st_ino == os.stat(tmp_path / LOCK).st_ino
    with pytest.raises(PolypsynthError, match=f"output folder {tmp_path} is being written by another"):
        FolderLock(tmp_path, "output folder").__enter__()  # a third writer sees the second's lock
    second.__exit__(None, None, None)
    assert not (tmp_path / LOCK).exists()
    with FolderLock(tmp_path) as again:  # free again once it is released
        assert again.fd is not None
