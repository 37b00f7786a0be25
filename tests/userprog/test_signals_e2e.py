"""Signals end to end on the simulated machine: a program with a SIGSEGV handler (a crash
reporter or a JVM-style runtime) whose rseq area becomes read-only, then migrates.

Per kernel (see tests/kernel/test_signals.py for the source behind each): 6.19 delivers the
slow path's catchable SIGSEGV and the program goes on; 6.18's delivery pass fails again, so
the handler runs once and the task dies at its rt_sigreturn; 7.1 with glibc's 32-byte
registration forces an ID rewrite after the delivery, which fails while SIGSEGV is blocked:
death before the handler runs. Blocked or ignored, SIGSEGV kills on every kernel.
"""

from __future__ import annotations

import pytest

from rseqlab.kernel._base import SIG_BLOCK, SIG_UNBLOCK
from rseqlab.kernel._task import SIG_IGN, SIGSEGV, SIGUSR1
from rseqlab.machine.machine import make_machine
from rseqlab.usermem import PAGE_SIZE
from rseqlab.userprog.libc import Glibc

EXPECTED = {  # kernel -> (killed by, handler calls, reached the end)
    "6.18": (SIGSEGV, 1, False),
    "6.19": (None, 1, True),
    "7.1": (SIGSEGV, 0, False),
}


def _run(kernel: str, disposition: str):
    m = make_machine(kernel, cpus=2, seed=0)
    out = {"handler": 0, "end": False}

    def on_segv(th, sig):
        out["handler"] += 1

    def main(th):
        if disposition == "handler":
            th.sigaction(SIGSEGV, on_segv)
        elif disposition == "blocked":
            th.sigaction(SIGSEGV, on_segv)
            th.sigprocmask(SIG_BLOCK, {SIGSEGV})
        else:
            th.sigaction(SIGSEGV, SIG_IGN)
        th.compute(10_000)
        th.mm.protect(th.area & ~(PAGE_SIZE - 1), PAGE_SIZE, writable=False)
        th.setaffinity({1 - th.kt.cpu})  # the stopper moves it: a migration, new IDs to write
        th.compute(10_000)
        out["end"] = True

    st = m.spawn(main, runtime=Glibc("2.36"), affinity={0})
    m.run()
    return st.proc.killed_by, out["handler"], out["end"]


@pytest.mark.parametrize("kernel", sorted(EXPECTED))
def test_crash_reporter_on_a_read_only_rseq_area(kernel):
    assert _run(kernel, "handler") == EXPECTED[kernel]


@pytest.mark.parametrize("kernel", sorted(EXPECTED))
@pytest.mark.parametrize("disposition", ["blocked", "ignored"])
def test_blocked_or_ignored_sigsegv_kills(kernel, disposition):
    assert _run(kernel, disposition) == (SIGSEGV, 0, False)


def test_sigprocmask_defers_a_signal_to_the_unblocking_syscall():
    m = make_machine("6.19", cpus=1, seed=0)
    seen = []

    def main(th):
        th.sigaction(SIGUSR1, lambda t, sig: seen.append(("handler", t.now)))
        old = th.sigprocmask(SIG_BLOCK, {SIGUSR1})
        th.raise_signal(SIGUSR1)
        seen.append(("raised", th.now))
        assert old == frozenset() and th.kt.pending == [SIGUSR1]
        th.sigprocmask(SIG_UNBLOCK, {SIGUSR1})
        seen.append(("unblocked", th.now))

    m.spawn(main, runtime=Glibc())
    m.run()
    assert [what for what, _ in seen] == ["raised", "handler", "unblocked"]
