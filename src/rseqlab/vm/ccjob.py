"""A parallel compile in the guest: the host's own gcc (driver, ``cc1``, ``as``) compiling generated
C files, ``JOBS`` at a time, as ``make -jJOBS`` of a small project would.

It is the one fidelity workload with many short-lived processes that each exec a dynamically
linked program (glibc registers rseq in every one), page-fault their way through large binaries,
and compete for the CPUs. The sources are generated, self-contained (no headers: ``-nostdinc``, the guest has none), and the same
for the same ``units``, so two runs compile the same code; the guest keeps nothing but the objects'
count, which the script checks (a failed compile fails the workload).

``rseqlab vm run VERSION -- cc-parallel [UNITS [JOBS]]`` runs it; ``make fidelity`` has a row.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import BadInput, Unavailable

NAME = "cc-parallel"
GUEST_DIR = "work/cc"
DEFAULT_UNITS, DEFAULT_JOBS = 8, 2
MAX_UNITS = 64


def toolchain() -> dict[str, Path]:
    """The host's gcc as the guest needs it: guest path -> host file. The driver finds ``cc1``
    relative to its own location and ``as`` on PATH, so each goes in at its host path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise Unavailable("cc-parallel needs gcc on the host (apt-get install gcc)")

    def prog(name: str) -> Path:
        res = subprocess.run([gcc, f"-print-prog-name={name}"], capture_output=True, text=True)
        found = res.stdout.strip()
        path = Path(found) if "/" in found else Path(shutil.which(found) or "")
        if res.returncode != 0 or not path.is_file():
            raise Unavailable(f"cc-parallel: gcc names no usable {name} ({found or res.stderr.strip()})")
        return path

    return {"usr/bin/gcc": Path(gcc).resolve(), str(prog("cc1")).lstrip("/"): prog("cc1").resolve(),
            "usr/bin/as": prog("as").resolve()}


def unit_source(n: int) -> str:
    """Translation unit ``n``: integer kernels the optimiser has work with (loops to unroll and
    vectorise, a switch to lower, inlining), different per unit so nothing is shared."""
    lines = [f"/* rseqlab cc-parallel unit {n} (generated) */"]
    for f in range(24):
        k = n * 31 + f
        lines += [
            f"static unsigned long mix{f}(unsigned long x) {{ x ^= x >> {7 + f % 13}; "
            f"x *= {0x9E3779B97F4A7C15 ^ k}UL; return x ^ (x >> {17 + f % 11}); }}",
            f"unsigned long kernel_{n}_{f}(const unsigned long *a, unsigned long *b, int len) {{",
            "    unsigned long acc = 0;",
            "    for (int i = 0; i < len; i++) {",
            f"        unsigned long v = mix{f}(a[i] + {k}UL);",
            f"        switch ((v >> {f % 5}) & 7) {{",
            *[f"        case {c}: acc += v * {c + k % 7 + 1}UL; break;" for c in range(7)],
            "        default: acc ^= v; break;",
            "        }",
            "        b[i] = acc;",
            "    }",
            f"    return mix{f}(acc);",
            "}",
        ]
    return "\n".join(lines) + "\n"


def run_script(units: int, jobs: int) -> str:
    """The guest's driver: ``jobs`` compiles at a time, then a check that every object exists."""
    return (
        "#!/bin/sh\n"
        f"cd /{GUEST_DIR} || exit 1\n"
        "rm -f /tmp/cc-*.o\n"
        "i=0\n"
        f"for n in $(seq 0 {units - 1}); do\n"
        "    gcc -O2 -nostdinc -c u$n.c -o /tmp/cc-$n.o &\n"
        "    i=$((i + 1))\n"
        f"    if [ $((i % {jobs})) -eq 0 ]; then wait; fi\n"
        "done\n"
        "wait\n"
        f"[ \"$(ls /tmp/cc-*.o 2>/dev/null | wc -l)\" -eq {units} ] || "
        "{ echo 'cc-parallel: a compile failed' >&2; exit 1; }\n"
    )


def parse_args(args: list[str]) -> tuple[int, int]:
    """``[UNITS [JOBS]]`` as numbers within bounds."""
    if len(args) > 2:
        raise BadInput(f"{NAME}: expected at most UNITS and JOBS, got {' '.join(args)}")
    try:
        units = int(args[0]) if args else DEFAULT_UNITS
        jobs = int(args[1]) if len(args) > 1 else DEFAULT_JOBS
    except ValueError:
        raise BadInput(f"{NAME}: UNITS and JOBS must be numbers, got {' '.join(args)}") from None
    if not 1 <= units <= MAX_UNITS or not 1 <= jobs <= units:
        raise BadInput(f"{NAME}: need 1 <= UNITS <= {MAX_UNITS} and 1 <= JOBS <= UNITS, got {units} {jobs}")
    return units, jobs


def guest(args: list[str]) -> tuple[list[str], dict[str, Path], dict[str, bytes]]:
    """The guest's argv, the programs to copy in and the files to add for ``cc-parallel ARGS``."""
    units, jobs = parse_args(args)
    files = {f"{GUEST_DIR}/u{n}.c": unit_source(n).encode() for n in range(units)}
    files[f"{GUEST_DIR}/run"] = run_script(units, jobs).encode()
    return [f"/{GUEST_DIR}/run"], toolchain(), files
