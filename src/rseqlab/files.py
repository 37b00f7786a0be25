"""Reading input files safely: regular files only, and JSON without NaN or Infinity; and output
paths checked before the work that fills them.

Shared by the loaders of trace files, step files and cost models, so that each refuses the same
hostile inputs the same way: a FIFO must not block the ``open()``, a device (``/dev/zero``) or a
directory must not be read, and a number JSON does not allow must not reach a ``--json`` output.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from .errors import BadInput


def open_regular(path: str | Path, what: str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file; else one :class:`BadInput` line.

    Opened non-blocking, so that a FIFO without a writer cannot hang the open; ``what`` names the
    kind of file in the message (``"trace file"``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInput(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


def _reject_constant(token: str):
    raise ValueError(f"{token} is not a number JSON allows")


def loads_finite(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (ValueError), which
    Python's parser accepts and the JSON standard does not."""
    return json.loads(text, parse_constant=_reject_constant)


def check_writable(output: str | Path, option: str, what: str) -> Path:
    """Refuse an output path that cannot be written, before anything runs (not after a recording
    or a measurement). ``option`` names the option in the message (``"-o"``), ``what`` the file."""
    if str(output) == "":
        raise BadInput(f"{option}: an empty path; name the {what} to write")
    path = Path(output)
    try:
        is_dir, exists = path.is_dir(), path.exists()
        parent = path.parent if str(path.parent) else Path(".")
        parent_ok = parent.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise BadInput(f"{option} {path}: {exc.strerror or exc}") from None
    if is_dir:
        raise BadInput(f"{option} {path}: is a directory")
    if exists and not path.is_file():
        raise BadInput(f"{option} {path}: not a regular file (a {what} is written as a file)")
    if not parent_ok:
        raise BadInput(f"{option} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (exists and not os.access(path, os.W_OK)):
        raise BadInput(f"{option} {path}: not writable")
    return path


def map_regular(path: str | Path, what: str):
    """The whole of regular file ``path``, memory-mapped read-only (``b""`` when empty); a file that
    cannot be read or mapped is one :class:`BadInput` line naming ``what``."""
    import mmap

    with open_regular(path, what) as f:
        try:
            size = f.seek(0, 2)
            return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) if size else b""
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot read {what} {path}: {exc}") from None
