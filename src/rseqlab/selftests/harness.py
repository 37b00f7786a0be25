"""Running one ported test program as one process on a fresh simulated machine.

A ported test is a Python function ``main(th, out)`` that runs as the main
thread of a process: it spawns threads, runs critical sections and makes the
real test's assertions. What the C program would do on failure maps as:

* ``assert()`` / ``abort()`` → :class:`TestAbort` (an ``AssertionError``): it
  leaves the thread's greenlet, unwinds the event loop and ends the run, as
  SIGABRT ends the whole process;
* ``rseq_bug()`` (compare-twice oracle) → :class:`~rseqlab.userprog.primitives.RseqBug`;
* a non-zero return of ``main`` → the process exit status.

Everything that varies between runs comes from the machine's seeded RNG, so
the same (test, kernel, seed) gives the same :class:`RunResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput
from ..kernel._task import SIGNAL_NAMES
from ..machine.machine import Machine, MachineConfig
from ..userprog.libc import LIBRSEQ_AREA_OFFSET, Glibc
from ..userprog.primitives import RseqBug

#: How long (simulated) a run may take before it is declared hung.
DEFAULT_TIME_LIMIT_NS = 120 * 1_000_000_000
#: Event budget: a livelock (a section that can never commit) spins forever.
DEFAULT_STEP_LIMIT = 20_000_000


class TestAbort(AssertionError):
    """``assert()`` failed or the program called ``abort()``."""

    __test__ = False  # not a pytest class


@dataclass
class Output:
    """What the program printed (stdout), line by line."""

    lines: list[str] = field(default_factory=list)

    def print(self, line: str) -> None:
        self.lines.append(line)


@dataclass
class RunResult:
    """One run of one ported test under one kernel."""

    passed: bool
    detail: str
    #: The kernel's eight counters plus the machine's and the program's.
    counters: dict[str, int]
    stdout: list[str]
    exit_status: int | None


@dataclass(frozen=True)
class MachineSpec:
    """The simulated machine a test runs on."""

    cpus: int = 2
    nodes: int = 1
    #: HZ=1000 and a 1 ms slice (CFS's slice for a dozen threads on two CPUs is
    #: about 0.75 ms): runs of a few simulated ms then see many preemptions.
    hz: int = 1000
    slice_ns: int = 1_000_000
    max_threads: int = 4096

    def config(self) -> MachineConfig:
        return MachineConfig(cpus=self.cpus, nodes=self.nodes, hz=self.hz, slice_ns=self.slice_ns,
                             max_threads=self.max_threads)


def library_area(th) -> int:
    """The area the library's accessors read (``rseq_offset``): glibc's if glibc
    registered it, else the library's own TLS union, whose ``cpu_id`` starts at -1."""
    if th.area:
        return th.area
    from ..abi import CpuIdSentinel, StructRseq, to_u32

    area = th.st.tls + LIBRSEQ_AREA_OFFSET
    if th.mm.peek(area + StructRseq.CPU_ID.offset, 4) == 0 and not th.local.get("tls_init"):
        th.mm.poke(area + StructRseq.CPU_ID.offset, 4, to_u32(CpuIdSentinel.UNINITIALIZED))
    th.local["tls_init"] = True
    th.area = area
    return area


def run_program(kernel: str, main: Callable[[Any, Output], int | None], *, machine: MachineSpec,
                seed: int = 0, glibc: Glibc | None = None,
                time_limit_ns: int = DEFAULT_TIME_LIMIT_NS,
                step_limit: int = DEFAULT_STEP_LIMIT) -> RunResult:
    """Run ``main`` as a process on a fresh machine until it exits, aborts or hangs."""
    m = Machine(kernel, machine.config(), seed=seed)
    out = Output()
    runtime = glibc if glibc is not None else Glibc("2.41", rseq_tunable=False)

    def program(th) -> int:
        library_area(th)
        status = main(th, out)
        return 0 if status is None else int(status)

    st = m.spawn(program, runtime=runtime)
    passed, detail = True, ""
    try:
        while True:
            m.run(until_ns=m.now + 100_000_000)
            if not m.running:
                break
            if m.now >= time_limit_ns:
                raise TestAbort(f"hung: still running after {time_limit_ns // 1_000_000} ms simulated")
            if m.sim.steps >= step_limit:
                raise TestAbort(f"livelock: {m.sim.steps} events without finishing")
    except RseqBug as exc:
        passed, detail = False, f"rseq_bug(): {exc}"
    except AssertionError as exc:
        passed, detail = False, str(exc) or "assertion failed"
    except RuntimeError as exc:
        if "deadlock" not in str(exc):
            raise
        passed, detail = False, str(exc)
    status = st.result if passed else None
    if passed and st.proc.killed_by:
        passed = False
        detail = f"killed by {SIGNAL_NAMES.get(st.proc.killed_by, st.proc.killed_by)}"
    elif passed and status:
        passed = False
        detail = f"exit status {status}"
    return RunResult(passed, detail, collect_counters(m), out.lines, status)


def collect_counters(m: Machine) -> dict[str, int]:
    counters = m.kernel.stats().as_dict(m.kernel.counters)
    threads = [t.thread for t in m.tasks.values() if t.thread is not None]
    counters["nr_abort"] = sum(t.local.get("nr_abort", 0) for t in threads)
    counters["signals_delivered"] = sum(t.local.get("signals_delivered", 0) for t in threads)
    counters["switches"] = m.switches
    counters["migrations"] = m.migrations
    counters["threads"] = len(m.tasks)
    counters["sim_us"] = m.now // 1000
    return counters


def check_machine(spec: MachineSpec, threads: int) -> None:
    """Impossible machines and workloads are bad input, found before anything runs."""
    spec.config().validate()
    if threads < 0:
        raise BadInput(f"impossible workload: {threads} threads")
    if threads + 2 > spec.max_threads:
        raise BadInput(f"impossible workload: {threads} threads need more memory than the machine has "
                       f"(at most {spec.max_threads - 2} worker threads)")
