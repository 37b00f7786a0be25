"""Golden outputs: a broad set of `--json` commands whose bytes are pinned.

Each case is a name and an argument list for `rseqlab`; `{out}` in an argument is replaced by a
file the command writes (its bytes are then part of the output), `{random:N}` by a trace built
from seed N by the replay tests' random generator. `expected.json` holds the SHA-256 of each
case's stdout (plus written file); `python -m tests.golden.update` rewrites it (only when an
output change is intended) and `--dump DIR` writes the full outputs for a diff.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
GUEST_SOURCE = ROOT / "tests" / "data" / "guest-7.1.8-stats-sigstorm.trace"
GUEST = "guest.trace"  # copied into the run's directory: no absolute path reaches an output
EXPECTED = Path(__file__).with_name("expected.json")
ALL_KERNELS = "6.18,6.19,7.0,7.0.7,7.1,7.0+slice,7.1+slice,7.1+slice-off"
WHATIF = "6.19:no-cs-check,6.19:always-rewrite-ids,6.18:no-ids-rewrite"

CASES: dict[str, list[str]] = {
    "explain-all": ["explain", "--all", "--json"],
    "explain-all-debug": ["explain", "--all", "--debug", "--json"],
    "explain-all-arm64": ["explain", "--all", "--arch", "arm64", "--json"],
    "explain-whatif": ["explain", "preempt-in-cs", "-k", WHATIF, "--json"],
    "explain-slice": ["explain", "--all", "-k", "7.0+slice,7.1+slice", "--json"],
    "compare-kernel-build": ["compare", "-w", "kernel-build", "-k", ALL_KERNELS, "--seed", "3",
                             "-j", "1", "--json"],
    "compare-pingpong": ["compare", "-w", "pingpong", "-k", "6.18,6.19,7.1", "--seed", "1",
                         "-j", "1", "--json"],
    "compare-signals": ["compare", "-w", "signals", "-k", "6.18,6.19,7.1," + WHATIF, "--seed", "2",
                        "-j", "1", "--json"],
    "compare-tcmalloc": ["compare", "-w", "tcmalloc", "-k", "6.18,6.19,7.0,7.1", "--seed", "0",
                         "-j", "1", "--json"],
    "compare-server-arm64": ["compare", "-w", "server", "-k", "6.19,7.1", "--arch", "arm64",
                             "--seed", "5", "-j", "1", "--json"],
    "selftest-basic": ["selftest", "-t", "basic_test", "-j", "1", "--json"],
    "selftest-errors": ["selftest", "-t", "syscall_errors_test", "-j", "1", "--json"],
    "selftest-param": ["selftest", "-t", "param_test -T s -4 200 -r 10 -t 3", "-k", "6.18,6.19",
                       "-j", "1", "--json", "--perfetto", "{out}"],
    "check-percpu-counter": ["check", "percpu-counter", "-k", "6.18,6.19:no-cs-check",
                             "--preemptions", "1", "-j", "1", "--json"],
    "check-spinlock": ["check", "spinlock", "-k", "6.19", "--preemptions", "1", "--signals", "0",
                       "-j", "1", "--json"],
    "check-stepfile": ["check", "syscall-in-cs.rseq", "-k", "6.18,6.19", "--preemptions", "1",
                       "--debug", "-j", "1", "--json"],
    # (check --estimate is left out: it reports measured seconds)
    "replay-guest-fast": ["replay", GUEST, "-k", ALL_KERNELS + "," + WHATIF, "--per-process",
                          "-j", "1", "--json"],
    "replay-guest-reference": ["replay", GUEST, "-k", ALL_KERNELS + "," + WHATIF, "--per-process",
                               "--reference", "-j", "1", "--json"],
    "replay-guest-arm64": ["replay", GUEST, "-k", "6.18,6.19,7.1", "--arch", "arm64", "-j", "1",
                           "--json"],
    "replay-random-fast": ["replay", "{random:1}", "{random:2}", "{random:4}", "-k", ALL_KERNELS,
                           "-j", "1", "--json"],
    "replay-random-reference": ["replay", "{random:1}", "{random:2}", "{random:4}", "-k",
                                ALL_KERNELS, "--reference", "-j", "1", "--json"],
    "replay-random-killed": ["replay", "{random:3}", "-k", "6.18,6.19,7.1", "--per-process",
                             "-j", "1", "--json"],
    "trace-summary": ["trace", GUEST, "--format", "json"],
    "trace-events-csv": ["trace", GUEST, "--events", "--format", "csv"],
    "trace-events-random-csv": ["trace", "{random:2}", "--events", "--format", "csv"],
    "export-chrome": ["export", GUEST, "--chrome", "{out}", "-k", "6.18,6.19,7.1"],
    "export-perfetto-random": ["export", "{random:1}", "--perfetto", "{out}"],
}


def _random_trace_file(seed: int, tmp: Path) -> str:
    from rseqlab.trace.format import save
    from tests.trace.test_fastreplay import _random_trace

    name = f"random-{seed}.trace"
    if not (tmp / name).exists():
        save(_random_trace(seed), tmp / name)
    return name


def run_case(args: list[str], tmp: Path) -> bytes:
    """The case's stdout, then (if it writes one) the file's bytes; stderr is not pinned
    (progress lines, paths), but the exit status is."""
    from rseqlab.cli import main

    out_file = tmp / "out"  # relative to the run's directory (the cwd)
    argv = []
    for a in args:
        if a == "{out}":
            a = "out"
        elif a.startswith("{random:"):
            a = _random_trace_file(int(a[8:-1]), tmp)
        argv.append(a)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    blob = f"status {int(status)}\n{out.getvalue()}".encode()
    if out_file.exists():
        blob += b"\n--- written file ---\n" + out_file.read_bytes()
        out_file.unlink()
    return blob


def run_all(names=None) -> dict[str, bytes]:
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="rseqlab-golden-") as d:
        tmp = Path(d)
        shutil.copyfile(GUEST_SOURCE, tmp / GUEST)
        os.chdir(tmp)
        try:
            return {name: run_case(CASES[name], tmp) for name in (names or CASES)}
        finally:
            os.chdir(cwd)


def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()
