"""Where rseqlab keeps what it builds or fetches: ``$XDG_CACHE_HOME/rseqlab`` (``~/.cache/rseqlab``).

One function, so that every user of the cache (compiled live workloads, guest programs, kernels)
fails the same way on an odd environment: ``XDG_CACHE_HOME`` pointing at a file, an unwritable
``HOME``, a cache owned by another user. Each is one :class:`~rseqlab.errors.BadInput` line that
names the directory and the environment variable that moves it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BadInput


def cache_root() -> Path:
    """The cache's base directory (not created)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return Path(base) / "rseqlab"
    return Path(os.path.expanduser("~")) / ".cache" / "rseqlab"


def cache_dir(*parts: str) -> Path:
    """``cache_root()/parts...``, created if needed and checked to be a writable directory."""
    path = cache_root().joinpath(*parts)
    hint = "set XDG_CACHE_HOME to a writable directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInput(f"cache directory {path}: a file is in the way ({hint})") from None
    except NotADirectoryError:
        raise BadInput(f"cache directory {path}: a parent is not a directory ({hint})") from None
    except OSError as exc:
        raise BadInput(f"cache directory {path}: cannot create it: {exc.strerror or exc} ({hint})") from None
    if not path.is_dir():
        raise BadInput(f"cache directory {path}: not a directory ({hint})")
    if not os.access(path, os.W_OK | os.X_OK):
        raise BadInput(f"cache directory {path}: not writable by this user ({hint})")
    return path


def numba_cache_dir() -> str:
    """Where numba keeps the compiled replay driver (``NUMBA_CACHE_DIR``), never failing.

    numba's default is a ``__pycache__`` beside the installed source, which another user or a
    read-only install cannot write; with no usable fallback it raises when the function is
    decorated. The project's cache is tried first, then a per-user temporary directory."""
    try:
        return str(cache_dir("numba"))
    except BadInput:
        import tempfile

        path = Path(tempfile.gettempdir()) / f"rseqlab-numba-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        return str(path)
