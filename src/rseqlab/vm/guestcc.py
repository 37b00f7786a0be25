"""Static compilation of the harness's own small guest programs (probes), cached by source hash.

The recorder and the shipped workloads are :mod:`rseqlab.vm.guestbuild`'s; this is for the
probes under ``probes/`` and reuses its cache directory and flags.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import Unavailable
from .kernels import cache_root

CFLAGS = ("-static", "-O2", "-Wall", "-pthread")


def static_program(name: str, source: str, *, extra: tuple[str, ...] = ()) -> Path:
    cc = os.environ.get("CC") or "gcc"
    if shutil.which(cc) is None:
        raise Unavailable(f"no C compiler ({cc}) to build {name}; install gcc")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([source, version, *CFLAGS, *extra]).encode()).hexdigest()[:16]
    out = cache_root() / "guest" / key / name
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f"{name}.c"
    src.write_text(source)
    tmp = out.parent / f".{name}.{os.getpid()}"
    res = subprocess.run([cc, *CFLAGS, *extra, "-o", str(tmp), str(src)], capture_output=True, text=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        raise Unavailable(f"building {name} statically failed: {lines[-1] if lines else 'compiler error'}"
                          " (static glibc: libc6-dev)")
    os.replace(tmp, out)
    return out
