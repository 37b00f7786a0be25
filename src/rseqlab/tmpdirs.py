"""Temporary directories that a killed run cannot leak for good.

SIGINT, SIGTERM and SIGHUP unwind a command through its clean-ups (``_startup``), which remove
a :func:`owned_tempdir`. SIGKILL (or the OOM killer) runs no clean-up, so each directory holds a
lock file its process keeps ``flock``-ed: the kernel drops the lock when the process dies,
whatever PID namespace it ran in, and the next run of the same kind removes every directory of
its prefix whose lock it can take (:func:`remove_stale`), as the recorder removes a killed
recorder's tracefs instances.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".rseqlab-owner"
#: A directory without a lock file is one being created right now, or one made by an rseqlab
#: from before the locks (a live run of it cannot be told from a dead one): only a day old or
#: more is it taken for a leftover.
_UNLOCKED_STALE_S = 86400.0


def remove_stale(prefix: str, root: str | Path | None = None) -> list[Path]:
    """Remove the directories ``root/prefix*`` no live process owns; returns what was removed."""
    removed = []
    for d in sorted(Path(root or tempfile.gettempdir()).glob(f"{prefix}*")):
        try:
            if not d.is_dir() or d.is_symlink():
                continue
            lock = d / LOCK_NAME
            if not lock.exists():
                if time.time() - d.stat().st_mtime < _UNLOCKED_STALE_S:
                    continue
            else:
                fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its owner is alive
                finally:
                    os.close(fd)
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        except OSError:
            continue  # another user's directory, or gone meanwhile
    return removed


@contextmanager
def owned_tempdir(prefix: str) -> Iterator[str]:
    """A fresh temporary directory, locked for this process, removed on the way out.

    Stale directories of the same prefix (their owner was killed) are removed first."""
    remove_stale(prefix)
    path = tempfile.mkdtemp(prefix=prefix)
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
