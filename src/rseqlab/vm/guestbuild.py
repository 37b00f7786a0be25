"""Static builds of the guest's programs: the recorder (``guest/guestrec.c``) and the shipped C
workloads (``live/workloads/*.c``).

A guest has no shared libraries of its own, so everything it runs from rseqlab is linked with
``gcc -static`` (static glibc: ``libc.a`` from ``libc6-dev``, which ``make setup`` installs when it
is missing). Each binary is cached under ``$XDG_CACHE_HOME/rseqlab/guest`` (default
``~/.cache/rseqlab/guest``) in a directory named by a hash of its source, the compiler's version
and the flags, so a second call costs one ``gcc --version``. Missing compiler or static libc is an
:class:`~rseqlab.errors.Unavailable` error saying what to install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from ..errors import BadInput, Unavailable
from ..live.workloads import WORKLOADS
from ..live.workloads import source as workload_source

#: The recorder's source file (package data of ``rseqlab.vm``).
GUESTREC = "guestrec"
#: Flags of every guest build; part of the cache key.
CFLAGS = ("-static", "-O2", "-Wall", "-pthread")


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/rseqlab/guest``, created and checked (:func:`rseqlab.cache.cache_dir`)."""
    from ..cache import cache_dir as checked

    return checked("guest")


def guestrec_source() -> str:
    return resources.files("rseqlab.vm").joinpath("guest", "guestrec.c").read_text()


def programs() -> list[str]:
    """Everything this module builds: the recorder and every shipped workload."""
    return [GUESTREC, *WORKLOADS]


def _compiler(cc: str | None) -> tuple[str, str]:
    compiler = cc or os.environ.get("CC") or "gcc"
    if shutil.which(compiler) is None:
        raise Unavailable(f"no C compiler ({compiler}) to build the guest programs; install gcc")
    res = subprocess.run([compiler, "--version"], capture_output=True, text=True)
    return compiler, res.stdout


def check_static_libc(cc: str | None = None) -> None:
    """Unavailable unless ``cc`` can link a static program (glibc's ``libc.a`` is present)."""
    compiler, _ = _compiler(cc)
    res = subprocess.run([compiler, "-print-file-name=libc.a"], capture_output=True, text=True)
    where = res.stdout.strip()
    if res.returncode != 0 or not os.path.isabs(where) or not os.path.exists(where):
        raise Unavailable(f"{compiler} finds no static C library (libc.a) for the guest programs; "
                          "install libc6-dev (make setup does)")


def build(name: str, *, cc: str | None = None) -> Path:
    """Compile guest program ``name`` statically (once per source) and return its path."""
    if name == GUESTREC:
        text = guestrec_source()
    elif name in WORKLOADS:
        text = workload_source(name)
    else:
        raise BadInput(f"unknown guest program {name!r}; accepted: {', '.join(programs())}")
    compiler, version = _compiler(cc)
    key = hashlib.sha256("\0".join([text, version, *CFLAGS]).encode()).hexdigest()[:16]
    out = cache_dir() / key / name
    if out.exists():
        return out
    check_static_libc(compiler)
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f"{name}.c"
    src.write_text(text)
    tmp = out.parent / f".{name}.{os.getpid()}"
    res = subprocess.run([compiler, *CFLAGS, "-o", str(tmp), str(src)], capture_output=True, text=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        if any("cannot find -lc" in ln or "cannot find -lpthread" in ln for ln in lines):
            raise Unavailable(f"static link of {name} failed: no libc.a; install libc6-dev (make setup does)")
        raise Unavailable(f"building {name} statically failed: {lines[-1] if lines else 'compiler error'}")
    os.replace(tmp, out)
    return out


def build_all(*, cc: str | None = None) -> dict[str, Path]:
    """The recorder and every shipped workload, by name."""
    return {name: build(name, cc=cc) for name in programs()}
