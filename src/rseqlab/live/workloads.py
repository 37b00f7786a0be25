"""The shipped workloads: small C programs, compiled on demand with the machine's compiler.

Sources live in ``live/workloads/*.c`` (package data). :func:`build` compiles
one into a cache directory keyed by the source and the compiler, so a second
call is free. Each program documents its arguments at the top of its source.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from ..errors import BadInput, Unavailable

WORKLOADS = {
    "pingpong": "two threads bounce a byte through pipes (pinned on CPU 0 by default)",
    "sigstorm": "a thread signals itself in a loop (one handler frame per kill)",
    "munmaploop": "open, mmap, close, munmap a file in a loop (deferred fput task_work)",
    "threadmix": "threads mixing CPU bursts, sleeps, a contended mutex, yields and pipes",
    "forkloop": "fork children that exit at once, one after the other (rseq_fork, exit)",
}


def cache_dir() -> Path:
    from ..cache import cache_dir as checked

    return checked("workloads")


def source(name: str) -> str:
    if name not in WORKLOADS:
        raise BadInput(f"unknown workload {name!r}; accepted: {', '.join(WORKLOADS)}")
    return resources.files("rseqlab.live").joinpath("workloads", f"{name}.c").read_text()


def build(name: str, *, cc: str | None = None) -> Path:
    """Compile workload ``name`` (once) and return the executable's path."""
    text = source(name)
    compiler = cc or os.environ.get("CC") or "gcc"
    if shutil.which(compiler) is None:
        raise Unavailable(f"no C compiler ({compiler}) to build the workload {name}")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256((text + version).encode()).hexdigest()[:16]
    out = cache_dir() / key / name
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f"{name}.c"
    src.write_text(text)
    tmp = out.parent / f".{name}.{os.getpid()}"
    res = subprocess.run([compiler, "-O2", "-Wall", "-pthread", "-o", str(tmp), str(src)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise Unavailable(f"building {name} failed: {res.stderr.strip().splitlines()[-1:]}")
    os.replace(tmp, out)
    return out


def compile_tree(path: Path, files: int = 10, functions: int = 60) -> list[str]:
    """The shipped compile workload (``make bench``, the live tests): generated C units and a
    Makefile in ``path``; returns the ``make -j2`` command that builds them."""
    path.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        body = "\n".join(
            f"double f{i}_{j}(const double *v, int n) {{ double a = {j}.0; for (int k = 0; k < n; k++) "
            f"{{ a += v[k] * (k % {j + 2}) - a / (k + {i + 1}); if (a > 1e9) a = sin(a) * {j}; }} return a; }}"
            for j in range(functions))
        (path / f"g{i}.c").write_text("#include <math.h>\n" + body + "\n")
    (path / "Makefile").write_text("OBJS=$(patsubst %.c,%.o,$(wildcard *.c))\nall: $(OBJS)\n"
                                   "%.o: %.c\n\t$(CC) -O2 -c $< -o $@\nclean:\n\trm -f *.o\n")
    return ["make", "-s", "-C", str(path), "-j2"]
