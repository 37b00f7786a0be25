"""Replay of recordings with ``context_tracking:user_enter/user_exit``: the returns are read, not inferred.

Each test builds the same workload twice where it matters: once as a kernel with user context
tracking records it (every entry from user mode preceded by ``user_exit``, every return followed
by ``user_enter``), once without those events, so the inference's ambiguities are visible.
"""

from __future__ import annotations

import numpy as np
import pytest

from rseqlab.trace.format import IrqKind, Kind, Trace
from rseqlab.trace.replay import Replay, replay

from .test_replay import AREA, ROOT, SIG, Builder

KERNELS = ["6.18", "6.19", "7.1"]


class Tracked(Builder):
    """A Builder whose helpers record what a context-tracking kernel traces."""

    def ret(self, pid=ROOT, cpu=0, dt=1_000):
        return self.ev(Kind.USER_ENTER, pid, cpu=cpu, dt=dt)

    def from_user(self, pid=ROOT, cpu=0, dt=1_000_000):
        return self.ev(Kind.USER_EXIT, pid, cpu=cpu, dt=dt)

    def syscall(self, nr, ret=0, pid=ROOT, args=None, block=False, cpu=0):
        self.from_user(pid, cpu)
        super().syscall(nr, ret, pid, args, block, cpu)
        return self.ret(pid, cpu)

    def tick_in_user(self, pid=ROOT, cpu=0, preempt=False):
        self.from_user(pid, cpu).ev(Kind.IRQ, pid, int(IrqKind.TIMER), cpu=cpu, dt=1_000)
        if preempt:
            # The handler takes tens of microseconds; the switch follows in the interrupt's exit.
            self.ev(Kind.SWITCH_OUT, pid, 0, dt=20_000).ev(Kind.SWITCH_IN, pid, cpu=cpu, dt=20_000)
        return self.ret(pid, cpu)


def started() -> Tracked:
    """The root leaves the gate (its read() returns), execs, registers rseq."""
    b = Tracked()
    b.ev(Kind.SWITCH_IN, ROOT).ev(Kind.SYS_EXIT, ROOT, 0, 2).ret()
    b.from_user().ev(Kind.SYS_ENTER, ROOT, 59, -1).ev(Kind.EXEC, ROOT).ev(Kind.SYS_EXIT, ROOT, 59, 0).ret()
    return b.syscall(334, args=(AREA, 32, 0, SIG))


def stripped(trace: Trace) -> Trace:
    """The same recording without the context-tracking events (what other kernels give)."""
    ev = trace.events
    keep = (ev["kind"] != Kind.USER_ENTER) & (ev["kind"] != Kind.USER_EXIT)
    rows = np.cumsum(keep) - 1
    sa = {k: v.copy() for k, v in trace.sysargs.items()}
    sa["event"] = rows[sa["event"].astype(np.int64)].astype(sa["event"].dtype)
    return Trace(dict(trace.meta), {k: v[keep] for k, v in ev.items()}, sa)


def run(trace: Trace, kernels=KERNELS, **kw):
    return replay(trace, kernels, reference=True, **kw)


def test_exit_is_one_per_recorded_return_on_every_personality():
    b = started()
    for _ in range(20):
        b.syscall(39)
        b.tick_in_user()
    b.tick_in_user(preempt=True)
    trace = b.trace()
    returns = int(np.count_nonzero(trace.events["kind"] == Kind.USER_ENTER))
    for rel, r in run(trace).items():
        assert r.counters["exit"] == returns, rel


def test_a_tick_in_the_exit_path_is_no_entry_from_user():
    """A tick right after sys_exit, before the return: the exit path was interrupted (no user_exit).
    The inference cannot tell it from a tick in user mode just after the return; the recording can."""
    def workload(in_user: bool) -> Trace:
        b = started()
        b.from_user().ev(Kind.SYS_ENTER, ROOT, 39, -1).ev(Kind.SYS_EXIT, ROOT, 39, 0)
        if in_user:
            b.ret(dt=1_000).tick_in_user()
        else:
            b.ev(Kind.IRQ, ROOT, int(IrqKind.TIMER), dt=1_000).ret(dt=1_000)
        return b.syscall(39).trace()

    kernel_path, user = run(workload(False)), run(workload(True))
    for rel in KERNELS:
        assert user[rel].counters["exit"] == kernel_path[rel].counters["exit"] + 1, rel
    # Without the events both recordings read the same way: the tick is taken from user mode.
    blind_k, blind_u = run(stripped(workload(False))), run(stripped(workload(True)))
    assert blind_k["6.19"].counters == blind_u["6.19"].counters


def test_timing_does_not_matter_once_the_returns_are_recorded():
    """The inference's windows are timing rules (a switch-out long after an interrupt is a new
    entry); a slow handler breaks them. With the returns recorded, only the order counts."""
    def workload(handler_ns: int) -> Trace:
        b = started()
        for _ in range(5):
            b.from_user().ev(Kind.IRQ, ROOT, int(IrqKind.TIMER), dt=1_000)
            b.ev(Kind.SWITCH_OUT, ROOT, 0, dt=handler_ns).ev(Kind.SWITCH_IN, ROOT, dt=20_000).ret()
            b.syscall(39)
        return b.trace()

    fast_handler, slow_handler = workload(20_000), workload(2_000_000)
    for rel in KERNELS:
        assert run(fast_handler)[rel].counters == run(slow_handler)[rel].counters, rel
    assert run(stripped(fast_handler))["6.19"].counters != run(stripped(slow_handler))["6.19"].counters


def test_tracked_and_inferred_agree_where_inference_is_unambiguous():
    """Events far apart in time: the inference gets every return right, so both loops agree."""
    b = started()
    for i in range(10):
        b.syscall(0, block=True)
        b.syscall(39)
        if i % 3 == 0:
            b.tick_in_user(preempt=i % 2 == 0)
    trace = b.trace()
    tracked, inferred = run(trace), run(stripped(trace))
    for rel in KERNELS:
        assert tracked[rel].counters == inferred[rel].counters, rel
        assert tracked[rel].tracepoints == inferred[rel].tracepoints, rel


def test_fast_path_falls_back_and_gives_the_reference_result():
    pytest.importorskip("numba")
    b = started()
    for _ in range(5):
        b.syscall(0, block=True)
        b.tick_in_user(preempt=True)
    trace = b.trace()
    fast = replay(trace, KERNELS)
    ref = replay(trace, KERNELS, reference=True)
    assert {k: v.as_json() for k, v in fast.items()} == {k: v.as_json() for k, v in ref.items()}


def test_lost_user_enter_closes_the_open_return_and_a_pending_one_at_the_end_is_not_played():
    b = started()
    b.from_user().ev(Kind.SYS_ENTER, ROOT, 39, -1).ev(Kind.SYS_EXIT, ROOT, 39, 0)  # user_enter lost
    b.syscall(39)
    b.from_user().ev(Kind.SYS_ENTER, ROOT, 39, -1).ev(Kind.SYS_EXIT, ROOT, 39, 0)  # returns after the end
    trace = b.trace()
    returns = int(np.count_nonzero(trace.events["kind"] == Kind.USER_ENTER))
    r = Replay(trace, "6.19").run()
    assert r.counters["exit"] == returns + 1  # the lost one is played at the next entry
    assert r.per_task[ROOT]["exits"] == returns + 1


def test_fork_child_returns_through_its_own_user_enter():
    b = started()
    child = ROOT + 1
    b.from_user().ev(Kind.SYS_ENTER, ROOT, 57, -1).ev(Kind.FORK, ROOT, child, 0x11)
    b.ev(Kind.SYS_EXIT, ROOT, 57, child).ret()
    b.ev(Kind.SWITCH_IN, child, cpu=1).ev(Kind.SYS_EXIT, child, 57, 0, cpu=1).ret(child, cpu=1)
    b.syscall(39, pid=child, cpu=1).ev(Kind.SYS_ENTER, child, 231, -1, cpu=1).ev(Kind.EXIT, child, 1, cpu=1)
    r = Replay(b.trace(), "6.19").run()
    assert r.per_task[child]["exits"] == 2
    assert r.counters["exit"] == int(np.count_nonzero(b.trace().events["kind"] == Kind.USER_ENTER))


def test_validate_names_the_inference_only_when_the_returns_are_not_recorded():
    from rseqlab.trace.replay import RESIDUAL_SOURCES, residual_sources, tracks_user_mode

    trace = started().syscall(39).trace()
    assert tracks_user_mode(trace) and not tracks_user_mode(stripped(trace))
    assert residual_sources(stripped(trace)) == list(RESIDUAL_SOURCES)
    assert "inferred" in RESIDUAL_SOURCES[0]
    assert residual_sources(trace) == list(RESIDUAL_SOURCES[1:])


def test_a_tick_in_the_syscall_entry_leaves_it_a_syscall():
    """user_exit, a tick (and a preemption) before sys_enter: the tick hit the syscall's entry
    path, so no user-mode interrupt is noted and a later switch in that syscall raises no fast path
    on 6.19 (measured: 21 of 110 predicted fast paths on a pingpong were this before the fix)."""
    def workload(tick_in_entry: bool) -> Trace:
        b = started()
        for _ in range(4):
            b.from_user()
            if tick_in_entry:
                b.ev(Kind.IRQ, ROOT, int(IrqKind.TIMER), dt=1_000)
                b.ev(Kind.SWITCH_OUT, ROOT, 0x100, dt=20_000).ev(Kind.SWITCH_IN, ROOT, dt=20_000)
            b.ev(Kind.SYS_ENTER, ROOT, 0, -1).ev(Kind.SWITCH_OUT, ROOT, 1).ev(Kind.SWITCH_IN, ROOT)
            b.ev(Kind.SYS_EXIT, ROOT, 0, 1).ret()
        return b.trace()

    plain, ticked = run(workload(False)), run(workload(True))
    for rel in KERNELS:
        assert ticked[rel].counters["exit"] == plain[rel].counters["exit"], rel
    # Only the registration's first return takes the fast path (it sets the event itself).
    assert ticked["6.19"].counters["fastpath"] == plain["6.19"].counters["fastpath"] == 1


def test_a_user_write_fault_on_the_rseq_page_after_fork_breaks_its_copy_on_write():
    """After fork the parent's rseq page is shared copy-on-write: 6.19's fast-path ID write (page
    faults off) fails and the slow path runs, unless user space wrote the page first (a recorded
    user fault on a present COW page). Measured: cc-parallel's shell, slowpath 1 observed, 2
    predicted before the fault addresses were used."""
    def workload(user_writes_first: bool) -> Trace:
        b = started()
        b.from_user().ev(Kind.SYS_ENTER, ROOT, 57, -1).ev(Kind.FORK, ROOT, ROOT + 1, 0x11)
        b.ev(Kind.SYS_EXIT, ROOT, 57, ROOT + 1).ret()
        if user_writes_first:
            b.from_user().ev(Kind.IRQ, ROOT, int(IrqKind.PAGE_FAULT), AREA + 16, 0x40_1000, dt=1_000).ret()
        # blocks, and wakes on the other CPU: the IDs change, the exit writes them
        b.from_user().ev(Kind.SYS_ENTER, ROOT, 0, -1).ev(Kind.SWITCH_OUT, ROOT, 1)
        b.ev(Kind.SWITCH_IN, ROOT, cpu=1).ev(Kind.SYS_EXIT, ROOT, 0, 1, cpu=1).ret(cpu=1)
        return b.trace()

    def slow(trace):
        return Replay(trace, "6.19").run().per_task[ROOT]["counters"]["slowpath"]

    assert slow(workload(False)) == 1
    assert slow(workload(True)) == 0


# A program with one critical section [START, START+0x40), its descriptor at DESC, abort at ABORT.
PROG, DESC, START, ABORT = "/prog", 0x4C_0000, 0x40_1000, 0x40_1100


def with_section(b: Tracked) -> Trace:
    trace = b.trace()
    trace.meta["exec_files"] = {str(ROOT): PROG}
    trace.meta["rseq_cs"] = {PROG: [[DESC, START, 0x40, ABORT]]}
    return trace


def interrupted_at(b: Tracked, ip: int, preempt: bool) -> Tracked:
    b.from_user().ev(Kind.IRQ, ROOT, int(IrqKind.TIMER), 0, ip, dt=1_000)
    if preempt:
        b.ev(Kind.SWITCH_OUT, ROOT, 0, dt=20_000).ev(Kind.SWITCH_IN, ROOT, dt=20_000)
    return b.ret()


def cs_counts(trace: Trace, rel: str = "6.19") -> dict:
    c = Replay(trace, rel).run().counters
    return {k: c[k] for k in ("cs", "clear", "fixup")}


def test_a_preemption_inside_a_critical_section_aborts_it():
    """The recorded user IP is inside the program's section, so its rseq_cs points at the
    descriptor: 6.19's check on the way out of the preempting interrupt aborts the section."""
    trace = with_section(interrupted_at(started(), START + 0x10, preempt=True))
    assert cs_counts(trace) == {"cs": 1, "clear": 0, "fixup": 1}
    assert Replay(trace, "6.19").run().tracepoints["rseq_ip_fixup"] == 1


def test_outside_the_section_or_without_a_preemption_nothing_is_checked():
    assert cs_counts(with_section(interrupted_at(started(), START + 0x40, preempt=True))) == \
        {"cs": 0, "clear": 0, "fixup": 0}  # the post-commit IP is outside
    assert cs_counts(with_section(interrupted_at(started(), START + 0x10, preempt=False))) == \
        {"cs": 0, "clear": 0, "fixup": 0}  # 6.19 checks only after a switch


def test_a_section_left_behind_is_a_stale_rseq_cs_the_next_check_clears():
    """Interrupted inside without a switch, then preempted outside: rseq_cs still points at the
    descriptor (user space does not clear it), so the check clears it instead of aborting."""
    b = interrupted_at(started(), START + 0x10, preempt=False)
    trace = with_section(interrupted_at(b, START + 0x80, preempt=True))
    assert cs_counts(trace) == {"cs": 1, "clear": 1, "fixup": 0}


def test_without_the_programs_sections_the_ip_changes_nothing():
    trace = interrupted_at(started(), START + 0x10, preempt=True).trace()
    assert cs_counts(trace) == {"cs": 0, "clear": 0, "fixup": 0}


@pytest.mark.parametrize("state", [0x100, 0], ids=["preempted", "scheduled"])
def test_a_switch_after_the_slow_paths_store_runs_the_fast_path_once_more(state):
    """7.1.8 forkloop (measured, 2 December 2026): after fork the parent's rseq page is copy-on-write,
    so the exit's fast path faults (page faults off) and fails, and the slow path's store faults
    again and resolves it. A switch after that second fault (a tick preempting the fault handling,
    or the work loop's schedule() for the resched the tick raised) sets the event again after the
    slow path took it, so the exit runs the fast path a second time: two rseq_update, fastpath 2,
    slowpath 1. Switched before the faults, the slow path takes the switch's event itself: one of
    each. The recorded kernel faults tell the two apart."""
    def exit_counts(rel: str, preempt_after_faults: bool) -> dict:
        b = started()
        b.from_user().ev(Kind.SYS_ENTER, ROOT, 57, -1).ev(Kind.FORK, ROOT, ROOT + 1, 0x11)
        b.ev(Kind.SYS_EXIT, ROOT, 57, ROOT + 1).ret()
        # wait4 blocks and the parent wakes on the other CPU: the IDs change
        b.from_user().ev(Kind.SYS_ENTER, ROOT, 61, -1).ev(Kind.SWITCH_OUT, ROOT, 1)
        b.ev(Kind.SWITCH_IN, ROOT, cpu=1).ev(Kind.SYS_EXIT, ROOT, 61, ROOT + 1, cpu=1)
        preempt = [(Kind.IRQ, int(IrqKind.TIMER)), (Kind.SWITCH_OUT, state), (Kind.SWITCH_IN, 0)]
        faults = [(Kind.KERNEL_FAULT, AREA + 4), (Kind.KERNEL_FAULT, AREA + 4)]
        for kind, a in faults + preempt if preempt_after_faults else preempt + faults:
            b.ev(kind, ROOT, a, cpu=1, dt=10_000)
        b.ret(cpu=1)
        trace = b.trace()
        trace.meta["kernel"]["release"] = "7.1.8"
        c = Replay(trace, rel).run().per_task[ROOT]["counters"]
        return {k: c[k] for k in ("fastpath", "slowpath", "ids")}

    # The registration's first return takes the fast path and writes the IDs; wait4's return
    # fails it and writes them in the slow path (and once more after the late preemption).
    assert exit_counts("7.1", preempt_after_faults=False) == {"fastpath": 2, "slowpath": 1, "ids": 2}
    assert exit_counts("7.1", preempt_after_faults=True) == {"fastpath": 3, "slowpath": 1, "ids": 3}
    # 6.19 raises no event for a kernel-mode preemption that changes no ID: one of each either way.
    assert exit_counts("6.19", preempt_after_faults=True) == exit_counts("6.19", preempt_after_faults=False)
