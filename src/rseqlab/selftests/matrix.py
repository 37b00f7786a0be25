"""``run_param_test.sh`` (userspace spec §2.7): its phases, in its order, with its counts.

``do_tests ARGS`` runs each of the 8 ``TEST_LIST`` entries with each of the 4
builds: ``<entry> -r REPS -t NR_THREADS ARGS``. The phases are "Default
parameters" (1 x do_tests), "Loop injection: 10000 loops" (-N 10000 for N =
1..9), "Testing in legacy RSEQ mode" (9 blocking variants x -7/-8/-9 -1, with
-L), the ``check_optimized`` gate, and "Testing in optimized RSEQ mode" (the
same without -L): 32 + 288 + 864 + 864 = 2048 runs.

Scaled to the simulated machine: ``NR_CPUS`` is the machine's CPU count and
``NR_THREADS = 6 x NR_CPUS`` as in the script; ``REPS`` is :data:`REPS` (the
script's 1000 scaled to 200: the membarrier runs with ``-s 1`` spin a manager
thread through every simulated millisecond the workers sleep). The reduced matrix (the default of ``rseqlab
selftest``) keeps every entry and build but runs fewer phases' variants and
fewer reps (:data:`REDUCED_VARIANTS`, :data:`REDUCED_REPS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .param_test import BUILDS

TEST_LIST = [
    ("-T s", "spinlock"),
    ("-T l", "list"),
    ("-T b", "buffer"),
    ("-T b -M", "buffer with barrier"),
    ("-T m", "memcpy"),
    ("-T m -M", "memcpy with barrier"),
    ("-T i", "increment"),
    ("-T r", "membarrier"),
]
SCRIPT_REPS = 1000
REPS = 200
BLOCKING = [f"-m {m} {how}" for how in ("-y", "-k", "-s 1") for m in (4, 2, 1)]
REDUCED_REPS = 100
#: The reduced matrix: default, two in-section loop injections, and one
#: blocking variant of each kind (yield in legacy mode, kill, sleep).
REDUCED_VARIANTS = [
    ("Default parameters", ""),
    ("Loop injection: 10000 loops", "-3 10000"),
    ("Loop injection: 10000 loops", "-4 10000"),
    ("Testing in legacy RSEQ mode", "-9 -1 -m 1 -y -L"),
    ("Testing in optimized RSEQ mode", "-9 -1 -m 1 -k"),
    ("Testing in optimized RSEQ mode", "-9 -1 -m 4 -s 1"),
]


@dataclass(frozen=True)
class MatrixRun:
    phase: str
    build: str
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return " ".join((self.build, *self.argv))

    @property
    def injected(self) -> bool:
        """Loop injection inside a section (points 2..6) or blocking injection."""
        args = list(self.argv)
        loops = any(a in {f"-{n}" for n in range(2, 7)} and args[i + 1] == "10000"
                    for i, a in enumerate(args[:-1]))
        return loops or "-1" in args


def _do_tests(phase: str, args: str, reps: int, threads: int) -> list[MatrixRun]:
    runs = []
    for entry, _ in TEST_LIST:
        for build in BUILDS:
            argv = f"{entry} -r {reps} -t {threads} {args}".split()
            runs.append(MatrixRun(phase, build, tuple(argv)))
    return runs


def full_matrix(cpus: int, reps: int = REPS) -> list[MatrixRun]:
    """All 2048 runs, in the script's order."""
    threads = 6 * cpus
    runs = _do_tests("Default parameters", "", reps, threads)
    for n in range(1, 10):
        runs += _do_tests("Loop injection: 10000 loops", f"-{n} 10000", reps, threads)
    for phase, legacy in (("Testing in legacy RSEQ mode", " -L"), ("Testing in optimized RSEQ mode", "")):
        for x in BLOCKING:
            for point in (7, 8, 9):
                runs += _do_tests(phase, f"-{point} -1 {x}{legacy}", reps, threads)
    return runs


def reduced_matrix(cpus: int, reps: int = REDUCED_REPS) -> list[MatrixRun]:
    threads = 6 * cpus
    runs: list[MatrixRun] = []
    for phase, args in REDUCED_VARIANTS:
        runs += _do_tests(phase, args, reps, threads)
    return runs
