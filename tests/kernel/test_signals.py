"""Signals as the kernel sends them (issue 13, item 1).

Expectations are written from the source (kernel/signal.c ``force_sig_info_to_task``,
``force_sig``, ``force_fatal_sig``, ``force_sigsegv``, ``signal_delivered``; x86
``handle_signal``/``setup_rt_frame``; every rseq call site of 6.18's kernel/rseq.c, 6.19's
and 7.1's kernel/rseq.c and rseq_entry.h), not from the model's output:

* ``force_sig(SIGSEGV)`` is catchable: an installed, unblocked handler runs. Blocked or
  ignored, the action is reset to SIG_DFL (and the signal unblocked): the task dies.
* ``force_sigsegv(sig)`` is ``force_fatal_sig(SIGSEGV)`` only when ``sig`` is SIGSEGV,
  else ``force_sig(SIGSEGV)``.
* the rseq part of a delivery runs inside ``setup_rt_frame()``: a failure there queues
  SIGSEGV but the frame is still set up, and ``signal_delivered()`` then blocks the
  delivered signal while its handler runs; ``rt_sigreturn`` restores the mask.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rseqlab.abi import RseqFlag, StructRseq
from rseqlab.kernel._base import HANDLER_CURRENT, SIG_BLOCK, SIG_SETMASK, SIG_UNBLOCK
from rseqlab.kernel._task import SIG_IGN, SIGSEGV, SIGUSR1, SIGUSR2
from rseqlab.machine.scripted import LAYOUT, Placement, ScriptedMachine
from rseqlab.scenarios import explain
from rseqlab.usermem import PAGE_SIZE

KERNELS = ["6.18", "6.19", "7.1"]
LAY = LAYOUT
BAD_SIG = 0xBAD5_1647


def frames(t) -> list[int]:
    return [f.sig for f in t.sigframes]


def bench(kernel: str, *, length: int = 32, debug: bool = False, handler: str = "handler") -> ScriptedMachine:
    b = ScriptedMachine(kernel, debug=debug)
    assert b.register(length=length) == 0
    if handler != "none":
        b.install_segv_handler(block=handler == "blocked", ignore=handler == "ignored")
    return b


def force(b: ScriptedMachine, fn) -> int | None:
    """A syscall whose kernel part calls ``fn(kernel, task)``; its exit delivers what that queued."""
    return b.syscall(work=lambda k, t: fn(k, t) or 0)


# ======================================================================
# kernel/signal.c, the same in 6.18, 6.19 and 7.1
# ======================================================================
@pytest.mark.parametrize("kernel", KERNELS)
def test_force_sig_is_caught_by_an_unblocked_handler(kernel):
    b = bench(kernel)
    t = b.task
    force(b, lambda k, task: k.force_sig(task, SIGSEGV))
    assert t.killed_by is None
    assert frames(t) == [SIGSEGV] and t.regs.ip == LAY.segv_handler_ip
    assert SIGSEGV in t.blocked  # signal_delivered(): no SA_NODEFER
    assert t.handlers[SIGSEGV] == LAY.segv_handler_ip  # the action is kept
    b.return_from_handlers()
    assert t.killed_by is None and not t.sigframes and SIGSEGV not in t.blocked
    assert b.handlers_run == [SIGSEGV]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("how", ["blocked", "ignored"])
def test_force_sig_blocked_or_ignored_resets_the_action_and_kills(kernel, how):
    b = bench(kernel, handler=how)
    t = b.task
    force(b, lambda k, task: k.force_sig(task, SIGSEGV))
    assert t.killed_by == SIGSEGV
    assert not t.sigframes
    assert SIGSEGV not in t.handlers and SIGSEGV not in t.blocked


@pytest.mark.parametrize("kernel", KERNELS)
def test_force_sigsegv_is_fatal_only_for_sigsegv(kernel):
    b = bench(kernel)
    force(b, lambda k, task: k.force_sigsegv(task, SIGUSR1))
    assert b.task.killed_by is None and frames(b.task) == [SIGSEGV]
    b2 = bench(kernel)
    force(b2, lambda k, task: k.force_sigsegv(task, SIGSEGV))
    assert b2.task.killed_by == SIGSEGV and not b2.task.sigframes


def test_pending_blocked_signal_is_delivered_when_unblocked():
    b = bench("6.19", handler="none")
    t = b.task
    force(b, lambda k, task: k.sigprocmask(task, SIG_BLOCK, {SIGUSR1}))
    force(b, lambda k, task: k.send_signal(task, SIGUSR1))
    assert not t.sigframes and t.pending == [SIGUSR1]  # blocked: stays pending, nobody woken
    force(b, lambda k, task: k.sigprocmask(task, SIG_UNBLOCK, {SIGUSR1}))
    assert frames(t) == [SIGUSR1] and not t.pending


def test_sigreturn_restores_the_mask_and_delivers_what_it_unblocks():
    b = bench("6.19", handler="none")
    t = b.task
    b.interrupt(signal=SIGUSR1)
    assert frames(t) == [SIGUSR1] and SIGUSR1 in t.blocked
    b.interrupt(signal=SIGUSR1)  # arrives while its handler runs: blocked, pending
    assert frames(t) == [SIGUSR1] and t.pending == [SIGUSR1]
    b.return_from_handlers()  # rt_sigreturn unblocks it: delivered on that same return, then returns
    assert b.handlers_run == [SIGUSR1, SIGUSR1] and not t.pending and not t.blocked


def test_sigaction_ignore_drops_and_flushes():
    b = bench("6.19", handler="none")
    t = b.task
    force(b, lambda k, task: k.sigprocmask(task, SIG_SETMASK, {SIGUSR2}))
    force(b, lambda k, task: k.send_signal(task, SIGUSR2))
    assert t.pending == [SIGUSR2]  # blocked signals are never ignored at send time
    force(b, lambda k, task: k.sigaction(task, SIGUSR2, SIG_IGN))
    force(b, lambda k, task: k.sigprocmask(task, SIG_SETMASK, set()))
    assert not t.sigframes and t.killed_by is None  # dequeued and ignored
    force(b, lambda k, task: k.send_signal(task, SIGUSR2))
    assert not t.pending  # ignored and unblocked: never queued


def test_synchronous_sigsegv_is_dequeued_before_lower_numbered_signals():
    b = bench("6.19")
    t = b.task
    force(b, lambda k, task: (k.send_signal(task, SIGUSR1), k.force_sig(task, SIGSEGV)))
    # SIGSEGV first (SYNCHRONOUS_MASK), then SIGUSR1 on the next pass: SIGUSR1's frame is newest.
    assert frames(t) == [SIGSEGV, SIGUSR1]


# ======================================================================
# The rseq call sites, per kernel
# ======================================================================
def _ro_area_then_migrate(b: ScriptedMachine) -> None:
    b.task.mm.protect(LAY.tls, PAGE_SIZE, writable=False)
    b.interrupt(resched=Placement(1, b.task.mm_cid))


def test_618_notify_resume_error_is_catchable_then_delivery_fails_fatally():
    """6.18 __rseq_handle_notify_resume: force_sigsegv(0) from TIF_NOTIFY_RESUME, then the
    delivery's own pass fails: force_sigsegv(SIGSEGV). The frame is set up regardless and
    SIGSEGV blocked during it: the handler runs once, rt_sigreturn unblocks the SIG_DFL one."""
    b = bench("6.18")
    t = b.task
    b.start_measuring(ftrace=False)
    _ro_area_then_migrate(b)
    assert t.killed_by is None and frames(t) == [SIGSEGV]
    assert SIGSEGV not in t.handlers and t.pending == [SIGSEGV] and SIGSEGV in t.blocked
    assert t.stats.signal == 1 and t.stats.slowpath == 1 and t.stats.cs == 2
    b.return_from_handlers()
    assert t.killed_by == SIGSEGV and b.handlers_run == [SIGSEGV]


def test_619_slow_path_failure_is_caught():
    """6.19 rseq_slowpath_update_usr: force_sig(SIGSEGV); its delivery only checks the CS."""
    b = bench("6.19")
    t = b.task
    b.start_measuring(ftrace=False)
    _ro_area_then_migrate(b)
    assert t.killed_by is None and frames(t) == [SIGSEGV]
    assert t.stats.as_dict() == {"exit": 1, "signal": 1, "slowpath": 1, "fastpath": 1, "ids": 0,
                                 "cs": 0, "clear": 0, "fixup": 0}
    b.return_from_handlers()
    assert t.killed_by is None and b.handlers_run == [SIGSEGV]


def test_71_legacy_rewrite_after_delivery_fails_while_blocked():
    """7.1, 32 bytes: __rseq_signal_deliver forces an ID rewrite; it fails with SIGSEGV blocked
    in its handler, so force_sig() resets and unblocks it: death before the handler runs."""
    b = bench("7.1")
    _ro_area_then_migrate(b)
    assert b.task.killed_by == SIGSEGV and b.handlers_run == []


@pytest.mark.parametrize("kernel", ["6.19", "7.1"])
def test_v2_or_619_read_only_violation_is_caught(kernel):
    """7.1 v2 (64 bytes): user space changed cpu_id_start, the ID write is refused (fatal), the slow
    path refuses again and force_sig(SIGSEGV) is caught; 6.19 has no such check: no signal."""
    b = bench(kernel, length=64)
    t = b.task
    t.mm.poke(LAY.area + StructRseq.CPU_ID_START.offset, 4, 0x8000_1234)
    b.interrupt(resched=Placement(1, t.mm_cid))
    if kernel == "7.1":
        assert t.killed_by is None and frames(t) == [SIGSEGV]
        b.return_from_handlers()
        assert t.killed_by is None and b.handlers_run == [SIGSEGV]
        b.interrupt(resched=Placement(0, t.mm_cid))  # still wrong: caught again
        b.return_from_handlers()
        assert t.killed_by is None and b.handlers_run == [SIGSEGV, SIGSEGV]
    else:
        assert t.killed_by is None and not t.sigframes


def test_debug_syscall_in_section_per_kernel():
    """The debug syscall check's force_sig(SIGSEGV) is caught. 6.18 then runs its handler pass
    with ksig (SIGNAL in the mask): the frame saves abort_ip. 6.19 delivers without a CS check
    after a syscall: the frame saves the IP inside the section. 7.1 legacy checks it at delivery
    (the debug twin, fatal without user_irq): force_sigsegv(SIGSEGV), death at rt_sigreturn.
    On 6.19 the rt_sigreturn is itself a syscall returning into the section: caught again."""
    got = {}
    for kernel in KERNELS:
        b = bench(kernel, debug=True)
        t = b.task
        b.enter_cs(at=8)
        b.syscall()
        got[kernel] = (t.killed_by, [f.saved_ip for f in t.sigframes])
        b.return_from_handlers(limit=1)
        got[kernel] += (t.killed_by, [f.saved_ip for f in t.sigframes])
    inside = LAY.cs_start + 8
    assert got == {"6.18": (None, [LAY.abort_ip], None, []), "6.19": (None, [inside], None, [inside]),
                   "7.1": (None, [inside], SIGSEGV, [])}


@pytest.mark.parametrize("kernel", ["6.18", "6.19", "7.1"])
def test_unregistration_write_fault(kernel):
    """6.18 returns -EFAULT and sends nothing; 6.19 and 7.1 rseq_reset_ids: force_sig(SIGSEGV),
    caught by the handler at the syscall's return. The registration stays (rseq_reset() is
    skipped), so 7.1's legacy rewrite after the delivery fails too, with SIGSEGV blocked: death."""
    b = bench(kernel)
    t = b.task
    t.mm.protect(LAY.tls, PAGE_SIZE, writable=False)
    seen = {}

    def unregister(k, task):
        seen["ret"] = k.sys_rseq(task, LAY.area, 32, RseqFlag.UNREGISTER, task.rseq.sig)
        return seen["ret"]

    b.syscall(work=unregister)
    assert seen["ret"] == -errno.EFAULT
    assert t.rseq.usrptr == LAY.area  # still registered
    expected = {"6.18": (None, []), "6.19": (None, [SIGSEGV]), "7.1": (SIGSEGV, [SIGSEGV])}
    assert (t.killed_by, frames(t)) == expected[kernel]


@pytest.mark.parametrize("kernel", KERNELS)
def test_failed_delivery_of_another_signal_gets_a_catchable_sigsegv(kernel):
    """Preempted inside a section with a bad abort signature while SIGUSR1 arrives: the check at
    delivery fails, force_sigsegv(SIGUSR1) is force_sig(SIGSEGV), a second frame on top.
    6.18 validates the descriptor even outside the section, so delivering that SIGSEGV fails
    again (fatal: dies at its rt_sigreturn); 6.19/7.1 find the IP outside and clear rseq_cs."""
    b = bench(kernel)
    t = b.task
    t.mm.poke(LAY.abort_ip - 4, 4, BAD_SIG)
    b.enter_cs(at=8)
    b.interrupt(signal=SIGUSR1)
    assert frames(t) == [SIGUSR1, SIGSEGV]
    assert t.sigframes[0].saved_ip == LAY.cs_start + 8  # not aborted
    b.return_from_handlers()
    if kernel == "6.18":
        assert t.killed_by == SIGSEGV and b.handlers_run == [SIGSEGV]
    else:
        assert t.killed_by is None and b.handlers_run == [SIGSEGV, SIGUSR1]


# ======================================================================
# The built-in explain scenarios
# ======================================================================
SCENARIO_OUTCOMES = {
    # (killed by, handlers run, frames left) per kernel
    "segv-handler-ro-area": {"6.18": ("SIGSEGV", ["SIGSEGV"], []), "6.19": (None, ["SIGSEGV"], []),
                             "7.1": ("SIGSEGV", [], ["SIGSEGV"])},
    "segv-handler-blocked": {k: ("SIGSEGV", [], []) for k in KERNELS},
    "segv-ignored": {k: ("SIGSEGV", [], []) for k in KERNELS},
    "segv-handler-bad-cs": {k: ("SIGSEGV", ["SIGSEGV"], []) for k in KERNELS},
}


@pytest.mark.parametrize("name", sorted(SCENARIO_OUTCOMES))
@pytest.mark.parametrize("kernel", KERNELS)
def test_signal_scenarios(name, kernel):
    got = explain(name, kernel)
    assert (got.signal, got.handlers_run, got.sigframes) == SCENARIO_OUTCOMES[name][kernel]


def test_signal_counter_counts_the_sigsegv_delivery_too():
    """6.19 counts `signal` in __rseq_signal_deliver, only after a user-mode interrupt: the
    forced SIGSEGV delivered in the same interrupt return counts; after a syscall it does not."""
    assert explain("segv-handler-ro-area", "6.19").counters["signal"] == 1
    b = bench("6.19")
    b.start_measuring(ftrace=False)
    force(b, lambda k, task: k.force_sig(task, SIGSEGV))
    assert frames(b.task) == [SIGSEGV] and b.task.stats.signal == 0


# ======================================================================
# Property: with a handler, an rseq failure never kills directly; blocked/ignored: death
# ======================================================================
@dataclass(frozen=True)
class Irq:
    cpu: int | None
    signal: bool


@dataclass(frozen=True)
class Syscall:
    cpu: int | None


@dataclass(frozen=True)
class Protect:
    writable: bool


@dataclass(frozen=True)
class Inject:
    page: str


@dataclass(frozen=True)
class Simple:
    what: str  # enter, leave, badsig, goodsig, handlers, unregister, register


STEPS = st.one_of(
    st.builds(Irq, cpu=st.none() | st.integers(0, 1), signal=st.booleans()),
    st.builds(Syscall, cpu=st.none() | st.integers(0, 1)),
    st.builds(Protect, writable=st.booleans()),
    st.builds(Inject, page=st.sampled_from(["area", "descriptor"])),
    st.builds(Simple, what=st.sampled_from(["enter", "leave", "badsig", "goodsig", "handlers", "handlers",
                                            "unregister", "register"])),
)


def _instrument(b: ScriptedMachine, log: list):
    k = b.kernel
    inner_force, inner_handle = k.force_sig_info_to_task, k.handle_signal

    def force_sig_info_to_task(t, sig, handler):
        log.append(("force", sig, handler, sig in t.blocked, t.handlers.get(sig, 0), sig in t.pending))
        inner_force(t, sig, handler)

    def handle_signal(t, sig, handler):
        log.append(("frame", sig))
        inner_handle(t, sig, handler)

    k.force_sig_info_to_task = force_sig_info_to_task
    k.handle_signal = handle_signal


def _play(b: ScriptedMachine, step) -> None:
    t = b.task
    match step:
        case Irq(cpu, signal):
            b.interrupt(resched=None if cpu is None else Placement(cpu, t.mm_cid),
                        signal=SIGUSR1 if signal else None)
        case Syscall(cpu):
            if b.in_cs():
                b.leave_cs()
            b.syscall(block=None if cpu is None else Placement(cpu, t.mm_cid))
        case Protect(writable):
            t.mm.protect(LAY.tls, PAGE_SIZE, writable=writable)
        case Inject(page):
            t.mm.inject_fault(LAY.area if page == "area" else LAY.descriptor)
        case Simple("enter"):
            b.enter_cs(at=4)
        case Simple("leave"):
            b.leave_cs()
        case Simple("badsig"):
            t.mm.poke(LAY.abort_ip - 4, 4, BAD_SIG)
        case Simple("goodsig"):
            t.mm.poke(LAY.abort_ip - 4, 4, t.rseq.sig or 0x53053053)
        case Simple("handlers"):
            if b.in_cs():
                b.leave_cs()
            b.return_from_handlers()
        case Simple("unregister"):
            if b.in_cs():
                b.leave_cs()
            if t.rseq.usrptr:
                b.unregister()
        case Simple("register"):
            if b.in_cs():
                b.leave_cs()
            b.register()


@given(kernel=st.sampled_from(KERNELS), debug=st.booleans(),
       disposition=st.sampled_from(["handler", "blocked", "ignored"]),
       steps=st.lists(STEPS, min_size=1, max_size=25))
def test_rseq_failures_respect_the_sigsegv_disposition(kernel, debug, disposition, steps):
    b = bench(kernel, debug=debug, handler=disposition)
    t = b.task
    log: list = []
    _instrument(b, log)
    for step in steps:
        before = len(log)
        _play(b, step)
        forced = [e for e in log[before:] if e[0] == "force" and e[1] == SIGSEGV]
        if disposition != "handler" and forced and log[:before].count(("frame", SIGSEGV)) == 0:
            # Blocked or ignored: the first forced SIGSEGV resets the action; death on that return.
            assert t.killed_by == SIGSEGV, f"{step}: forced SIGSEGV did not kill ({disposition})"
            assert ("frame", SIGSEGV) not in log, "a blocked/ignored SIGSEGV reached its handler"
        if t.killed_by is not None:
            break
    forces = [e for e in log if e[0] == "force" and e[1] == SIGSEGV]
    if disposition == "handler":
        reachable = [e for e in forces if e[2] == HANDLER_CURRENT and not e[3] and e[4] > 1 and not e[5]]
        # Exactly one handler frame per forced SIGSEGV the handler could take.
        assert log.count(("frame", SIGSEGV)) == len(reachable), log
        if t.killed_by is not None:
            # Death only after something reset the action: a fatal force, or one while blocked.
            assert t.killed_by == SIGSEGV
            assert any(e[2] != HANDLER_CURRENT or e[3] or e[4] <= 1 for e in forces), log
            first_reset = next(i for i, e in enumerate(log) if e[0] == "force" and e[1] == SIGSEGV
                               and (e[2] != HANDLER_CURRENT or e[3] or e[4] <= 1))
            assert ("frame", SIGSEGV) in log[:first_reset], "an rseq failure killed the task directly"
