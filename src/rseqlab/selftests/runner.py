"""The ported suite: which tests exist, what each kernel is expected to do, running them.

Test names accepted by :func:`plan` (and ``rseqlab selftest --test``):

* ``syscall_errors_test``, ``basic_test``, ``basic_percpu_ops_test``,
  ``basic_percpu_ops_mm_cid_test``, ``tcmalloc-slab-cache``;
* ``run_param_test.sh``: the matrix (reduced, or all 2048 runs with ``full``);
* a param_test command line, e.g. ``"param_test_mm_cid -T l -4 10000 -r 100"``:
  the first word is the build, the rest goes through the real option parser
  (a bad option is the test's usage error, raised before anything runs).

Expectations: on every real kernel (release, alias or build) every test passes,
except ``tcmalloc-slab-cache``, which fails where a 32-byte registration gets no
ID rewrite after a plain switch (:data:`TCMALLOC_BROKEN`: 6.19 and 7.0 before
the 7.0.10 backport, with or without the slice extension) and passes on 6.18,
7.1 and 7.0.10. The ``slice_test`` variants (``slice_ext.VARIANT.slice_test``) pass
everywhere: on a kernel without the time-slice extension (before 7.0, not configured,
booted with ``rseq_slice_ext=0``) they SKIP, as kselftest counts a skip; where they
run, their ``Yielded``/``Aborted`` lines show the grants. What-if kernels have no
expectation.
On arm64 (``6.19@arm64``, see ``kernel/arch.py``) the same holds for 6.18 and 7.1;
6.19 and 7.0.y before 7.0.14 (7.0, 7.0.7, 7.0.10) on arm64 are the entry regression,
where no critical section is ever aborted:
which per-CPU runs lose an update depends on where the ticks land, so only the
tests without critical sections (``syscall_errors_test``, ``basic_test``) must
pass and the others are reported (:func:`regression_kernel`).
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput
from ..kernel import ALIASES, BUILDS, PERSONALITIES
from ..kernel.arch import split_kernel_name
from . import basic, basic_percpu_ops, matrix, param_test, slice_test, syscall_errors, tcmalloc_slab
from .harness import MachineSpec, RunResult

SUITE = ["syscall_errors_test", "basic_test", "basic_percpu_ops_test", "basic_percpu_ops_mm_cid_test",
         "run_param_test.sh", "tcmalloc-slab-cache", *slice_test.NAMES]
TCMALLOC = "tcmalloc-slab-cache"


def summary(name: str) -> str:
    """One line on what a suite test (``selftest --list``) runs."""
    if name in slice_test.NAMES:
        v = slice_test.VARIANTS[name.split(".")[1]]
        return (f"slice_test.c variant: {v.slice_ns // 1000} us slice, {v.noise_ns // 1000} us noise, "
                f"{v.sleep_ns // 1000} us sleep{', no yield' if v.no_yield else ''}")
    return {
        "syscall_errors_test": "syscall_errors_test.c: nine rseq() calls and their errno",
        "basic_test": "basic_test.c: the IDs follow the thread from CPU to CPU",
        "basic_percpu_ops_test": "basic_percpu_ops_test.c: per-CPU spinlock and list, indexed by cpu_id",
        "basic_percpu_ops_mm_cid_test": "basic_percpu_ops_test.c built for mm_cid indexing",
        "run_param_test.sh": "run_param_test.sh: the param_test matrix (reduced; --full for all 2048 runs)",
        TCMALLOC: "TCMalloc-style per-CPU slab cache and its background drain thread",
    }[name]


#: Tests that run no critical section: they must pass on every personality.
NO_SECTIONS = ("syscall_errors_test", "basic_test")


def regression_kernel(kernel: str) -> bool:
    """A kernel whose arch entry never sets ``user_irq`` (arm64 6.19 and 7.0 before 7.0.14): no
    section is aborted."""
    release, arch = split_kernel_name(kernel)
    known = release in PERSONALITIES or release in ALIASES or release in BUILDS
    return known and not release.startswith("6.18") and not arch.config(release).irq_entry_notes_user_irq


#: Kernels on which TCMalloc's cached slab word survives a switch (no legacy ID rewrite).
TCMALLOC_BROKEN = frozenset({"6.19", "7.0", "7.0.7", "7.0+slice", "7.0+slice-off"})


@dataclass(frozen=True)
class Case:
    """One process run of the suite, to be run under each kernel."""

    name: str
    run: Callable[[str, int], RunResult]

    def expected(self, kernel: str) -> bool | None:
        """True: must pass; False: must fail; None: no expectation (what-if kernels, and
        the sections of the arm64 regression kernels)."""
        release, arch = split_kernel_name(kernel)
        if release not in PERSONALITIES and release not in BUILDS and release not in ALIASES:
            return None
        if regression_kernel(kernel):
            return True if self.name in NO_SECTIONS else None
        return not (self.name == TCMALLOC and release in TCMALLOC_BROKEN)


@dataclass
class SelftestResult:
    test: str
    kernel: str
    passed: bool
    counters: dict[str, int]
    detail: str
    expected: bool | None

    @property
    def as_expected(self) -> bool:
        return self.expected is None or self.passed == self.expected

    def as_json(self) -> dict[str, Any]:
        return {"test": self.test, "kernel": self.kernel, "passed": self.passed,
                "counters": self.counters, "detail": self.detail}


def _param_case(command: str, machine: MachineSpec) -> Case:
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise BadInput(f"--test {command!r}: {exc}") from None
    if not words:
        raise BadInput("--test: an empty test name (rseqlab selftest --help lists the tests)")
    build, argv = words[0], words[1:]
    if build not in param_test.BUILDS:
        raise BadInput(f"unknown test {command!r}; accepted: {', '.join(SUITE)}, "
                       f"or a command line of {', '.join(param_test.BUILDS)}")
    opts = param_test.parse_args(argv, build)  # the real usage error, before anything runs
    if not opts.help:
        from .harness import check_machine

        check_machine(machine, opts.threads)
    return Case(command, lambda k, s: param_test.run(argv, k, build=build, machine=machine, seed=s))


def arm64_injection_runs(cpus: int) -> list[str]:
    """What the default suite adds for arm64 kernels: run_param_test.sh's loop injections at
    points 4 and 5 (between arm64's comparisons and its commit) with the full matrix's reps,
    for the four per-CPU data structures. The reduced matrix's -r 100 runs rarely take a tick
    inside those windows; these do, so the arm64 6.19 regression shows in a default run."""
    threads = 6 * cpus
    return [f"param_test {entry} -r {matrix.REPS} -t {threads} -{point} 10000"
            for point in (4, 5) for entry in ("-T s", "-T l", "-T b", "-T m")]


def plan(tests: list[str] | None = None, *, full: bool = False, cpus: int = 2,
         matrix_reps: int | None = None, arm64: bool = False) -> list[Case]:
    """The cases to run, in suite order; validates names, options and the machine first.

    ``arm64``: some kernel runs on arm64, and the default suite (no ``tests``) gets
    :func:`arm64_injection_runs` after the matrix."""
    machine = MachineSpec(cpus=cpus)
    machine.config().validate()
    cases: list[Case] = []
    names = list(tests or SUITE)
    if arm64 and not tests:
        at = names.index("run_param_test.sh") + 1
        names[at:at] = arm64_injection_runs(cpus)
    for name in names:
        if name == "syscall_errors_test":
            cases.append(Case(name, lambda k, s: syscall_errors.run(k, machine=machine, seed=s)))
        elif name == "basic_test":
            spec = MachineSpec(cpus=cpus, nodes=2 if cpus >= 2 else 1)
            cases.append(Case(name, lambda k, s, spec=spec: basic.run(k, machine=spec, seed=s)))
        elif name in ("basic_percpu_ops_test", "basic_percpu_ops_mm_cid_test"):
            mm_cid = "mm_cid" in name
            cases.append(Case(name, lambda k, s, mm=mm_cid: basic_percpu_ops.run(k, mm_cid=mm, machine=machine,
                                                                                  seed=s)))
        elif name == TCMALLOC:
            spec = MachineSpec(cpus=max(cpus, 4))  # the drainer gets a CPU of its own
            cases.append(Case(name, lambda k, s, spec=spec: tcmalloc_slab.run(k, machine=spec, seed=s)))
        elif name in slice_test.NAMES:
            variant = name.split(".")[1]
            cases.append(Case(name, lambda k, s, v=variant: slice_test.run(k, v, machine=machine, seed=s)))
        elif name in ("run_param_test.sh", "run_param_test"):
            if full:
                runs = matrix.full_matrix(cpus, matrix_reps or matrix.REPS)
            else:
                runs = matrix.reduced_matrix(cpus, matrix_reps or matrix.REDUCED_REPS)
            cases += [_param_case(r.name, machine) for r in runs]
        else:
            cases.append(_param_case(name, machine))
    return cases


def run(cases: list[Case], kernels: list[str], *, seed: int = 0,
        on_result: Callable[[SelftestResult], None] | None = None) -> Iterator[SelftestResult]:
    """Run every case under every kernel (case-major order), yielding results as they come."""
    for case in cases:
        for kernel in kernels:
            r = case.run(kernel, seed)
            result = SelftestResult(case.name, kernel, r.passed, r.counters, r.detail, case.expected(kernel))
            if on_result is not None:
                on_result(result)
            yield result


@functools.lru_cache(maxsize=8)
def _planned(tests: tuple[str, ...] | None, full: bool, cpus: int, arm64: bool) -> list[Case]:
    return plan(list(tests) if tests else None, full=full, cpus=cpus, arm64=arm64)


def run_item(item: tuple[tuple[str, ...] | None, bool, int, bool, int, str, int]) -> SelftestResult:
    """One run, named so that any process can do it: the plan's arguments, the case's index
    in it, the kernel and the seed (a ``Case`` holds closures, which do not pickle)."""
    tests, full, cpus, arm64, index, kernel, seed = item
    case = _planned(tests, full, cpus, arm64)[index]
    r = case.run(kernel, seed)
    return SelftestResult(case.name, kernel, r.passed, r.counters, r.detail, case.expected(kernel))


def run_fanout(tests: list[str] | None, kernels: list[str], *, full: bool = False, cpus: int = 2,
               arm64: bool = False, seed: int = 0, fan=None,
               on_result: Callable[[int, SelftestResult], None] | None = None) -> list[SelftestResult]:
    """:func:`run` through ``rseqlab.fanout`` (same results, same case-major order)."""
    from .. import fanout

    key = tuple(tests) if tests else None
    cases = _planned(key, full, cpus, arm64)
    items = [(key, full, cpus, arm64, i, k, seed) for i in range(len(cases)) for k in kernels]
    return fanout.run(run_item, items, fan, on_result=on_result)
