"""Descriptor validation, debug modes and fatal cases (spec §2.5, §2.7, §3.5, §3.9; userspace §8.4).

Each test builds the situation on a bench, breaks one thing, and checks the
kernel's verdict: SIGSEGV, a lazy clear, or an abort.
"""

from __future__ import annotations

import pytest

from rseqlab.abi import TASK_SIZE, StructRseq, StructRseqCs
from rseqlab.kernel._task import SIGSEGV
from rseqlab.machine.scripted import Placement, ScriptedMachine

KERNELS = ("6.18", "6.19")


def registered(kernel: str, *, debug: bool = False) -> ScriptedMachine:
    b = ScriptedMachine(kernel, debug=debug)
    assert b.register() == 0
    return b


def preempt(b: ScriptedMachine) -> bool:
    t = b.task
    return b.interrupt(resched=Placement(t.cpu, t.mm_cid))


def poke_desc(b: ScriptedMachine, field, value: int) -> None:
    b.task.mm.poke(b.layout.descriptor + field.offset, field.size, value)


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("kernel", KERNELS)
def test_wrong_signature_inside_is_fatal(kernel, debug):
    """V-01: every kernel and mode kills a section whose abort_ip lacks the signature."""
    b = registered(kernel, debug=debug)
    b.task.mm.poke(b.layout.abort_ip - 4, 4, 0xDEADBEEF)
    b.enter_cs(at=4)
    assert preempt(b) is False
    assert b.task.killed_by == SIGSEGV


@pytest.mark.parametrize("kernel", KERNELS)
def test_abort_ip_beyond_user_space_is_fatal(kernel):
    """V-02."""
    b = registered(kernel)
    poke_desc(b, StructRseqCs.ABORT_IP, TASK_SIZE + 0x1000)
    b.enter_cs(at=4)
    preempt(b)
    assert b.task.killed_by == SIGSEGV


@pytest.mark.parametrize("kernel", KERNELS)
def test_rseq_cs_pointer_beyond_user_space_is_fatal(kernel):
    """V-03: legacy -EINVAL in rseq_get_rseq_cs; 6.19 sets fatal in rseq_update_user_cs."""
    b = registered(kernel)
    b.task.mm.poke(b.layout.area + StructRseq.RSEQ_CS.offset, 8, TASK_SIZE)
    b.task.regs.ip = b.layout.cs_start
    preempt(b)
    assert b.task.killed_by == SIGSEGV


@pytest.mark.parametrize(("kernel", "debug", "fatal"), [
    ("6.18", False, True),   # legacy validates version even with the IP outside
    ("6.19", False, False),  # the 6.19 fast path never reads version/flags
    ("6.19", True, False),   # debug reads the head only once the IP is known to be inside
])
def test_bad_version_with_ip_outside(kernel, debug, fatal):
    """V-04, IP outside the section."""
    b = registered(kernel, debug=debug)
    poke_desc(b, StructRseqCs.VERSION, 1)
    b.enter_cs()
    b.leave_cs()
    preempt(b)
    assert (b.task.killed_by == SIGSEGV) is fatal
    if not fatal:
        assert b.area()["rseq_cs"] == 0  # lazily cleared


@pytest.mark.parametrize(("kernel", "debug", "fatal"), [
    ("6.18", False, True),
    ("6.19", False, False),  # aborts as if the descriptor were fine
    ("6.19", True, True),
])
@pytest.mark.parametrize("field", [StructRseqCs.VERSION, StructRseqCs.FLAGS])
def test_bad_version_or_flags_inside(kernel, debug, fatal, field):
    """V-04 and V-07 (descriptor flags), IP inside the section."""
    b = registered(kernel, debug=debug)
    poke_desc(b, field, 1)
    b.enter_cs(at=4)
    preempt(b)
    assert (b.task.killed_by == SIGSEGV) is fatal
    if not fatal:
        assert b.task.regs.ip == b.layout.abort_ip


@pytest.mark.parametrize(("kernel", "fatal"), [("6.18", True), ("6.19", False)])
def test_deprecated_flags_in_rseq_area(kernel, fatal):
    """V-07: legacy reads rseq->flags inside a section and dies on any bit; 6.19 never reads it."""
    b = registered(kernel)
    b.task.mm.poke(b.layout.area + StructRseq.FLAGS.offset, 4, 1)
    b.enter_cs(at=4)
    preempt(b)
    assert (b.task.killed_by == SIGSEGV) is fatal


@pytest.mark.parametrize(("kernel", "debug", "fatal"), [
    ("6.18", False, True), ("6.19", False, False), ("6.19", True, True)])
def test_abort_ip_inside_the_section(kernel, debug, fatal):
    """V-05: only legacy and 6.19 debug check that abort_ip lies outside."""
    b = registered(kernel, debug=debug)
    abort_inside = b.layout.cs_start + 0x20
    poke_desc(b, StructRseqCs.ABORT_IP, abort_inside)
    b.task.mm.poke(abort_inside - 4, 4, 0x53053053)
    b.enter_cs(at=4)
    preempt(b)
    assert (b.task.killed_by == SIGSEGV) is fatal


@pytest.mark.parametrize(("kernel", "debug", "fatal"), [
    ("6.18", False, True), ("6.19", False, False), ("6.19", True, True)])
def test_start_plus_offset_overflow(kernel, debug, fatal):
    """V-06: a section end beyond user space; IP outside in legacy terms (wraps)."""
    b = registered(kernel, debug=debug)
    poke_desc(b, StructRseqCs.POST_COMMIT_OFFSET, 2**64 - 0x10)
    b.enter_cs(at=4)
    preempt(b)
    assert (b.task.killed_by == SIGSEGV) is fatal


@pytest.mark.parametrize(("kernel", "debug", "outcome"), [
    ("6.18", False, "abort"),     # a handler pass runs (blocked) and the mask is set
    ("6.18", True, "sigsegv"),    # CONFIG_DEBUG_RSEQ: rseq_syscall() at syscall exit
    ("6.19", False, "commits"),   # user_irq == 0: the section is never checked
    ("6.19", True, "sigsegv"),    # __rseq_debug_syscall_return
])
def test_syscall_inside_a_section(kernel, debug, outcome):
    """V-08 / spec §4 row 11."""
    b = registered(kernel, debug=debug)
    b.enter_cs(at=4)
    b.syscall(block=Placement(1, 0))
    t = b.task
    if outcome == "sigsegv":
        assert t.killed_by == SIGSEGV
    elif outcome == "abort":
        assert t.killed_by is None and t.regs.ip == b.layout.abort_ip
    else:
        assert t.killed_by is None and b.in_cs() and b.area()["rseq_cs"] == b.layout.descriptor


def test_debug_syscall_return_outside_clears_without_cs_count():
    """Spec §3.9: the debug syscall-return check clears an armed section left behind (clear 1, cs 0)."""
    b = registered("6.19", debug=True)
    b.enter_cs()
    b.leave_cs()
    b.start_measuring(ftrace=False)
    b.syscall()
    assert b.task.stats.clear == 1 and b.task.stats.cs == 0
    assert b.area()["rseq_cs"] == 0


@pytest.mark.parametrize(("kernel", "debug", "fatal"), [
    ("6.18", False, False),  # tolerated: this is what TCMalloc relies on
    ("6.18", True, False),   # CONFIG_DEBUG_RSEQ only warns
    ("6.19", False, False),
    ("6.19", True, True),    # rseq_debug_validate_ids: mismatch is fatal
])
def test_user_writes_read_only_cpu_id_start(kernel, debug, fatal):
    """V-09: user space scribbles on cpu_id_start, then the task migrates."""
    b = registered(kernel, debug=debug)
    b.task.mm.poke(b.layout.area, 4, 0x8000_0000)
    b.interrupt(resched=Placement(1, 0))
    assert (b.task.killed_by == SIGSEGV) is fatal
    if not fatal:
        assert b.area()["cpu_id_start"] == 1


def test_legacy_rewrites_cpu_id_start_on_every_switch_but_619_does_not():
    """Spec §3.13 / userspace O-01, O-03: the behaviour TCMalloc depended on."""
    results = {}
    for kernel in KERNELS:
        b = registered(kernel)
        b.task.mm.poke(b.layout.area, 4, 0xFFFF_FFFF)
        b.syscall(block=Placement(0, 0))
        results[kernel] = b.area()["cpu_id_start"]
    assert results == {"6.18": 0, "6.19": 0xFFFF_FFFF}


def test_debug_fast_path_with_rseq_cs_zero_falls_back_to_slow_path():
    """Spec §7 Q4: the debug key checks the CS even when rseq_cs == 0; reading start_ip at
    address 8 faults, so the fast path fails and the slow path (which skips csaddr == 0) runs."""
    b = registered("6.19", debug=True)
    b.start_measuring(ftrace=False)
    preempt(b)
    s = b.task.stats
    assert (s.fastpath, s.cs, s.slowpath, s.ids, s.clear, s.fixup) == (1, 1, 1, 1, 0, 0)
    assert b.task.killed_by is None


@pytest.mark.parametrize("kernel", KERNELS)
def test_stale_descriptor_with_ip_elsewhere_is_cleared(kernel):
    """C-09: rseq_cs points to a finished section; preempted in unrelated code."""
    b = registered(kernel)
    b.enter_cs()
    b.leave_cs()
    b.start_measuring(ftrace=False)
    preempt(b)
    assert b.area()["rseq_cs"] == 0
    assert b.task.stats.clear == 1 and b.task.stats.fixup == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_unloaded_descriptor_after_prepare_unload_is_harmless(kernel):
    """V-10: rseq_prepare_unload() clears rseq_cs, then the descriptor memory goes away."""
    b = registered(kernel)
    b.enter_cs()
    b.leave_cs()
    b.task.mm.poke(b.layout.area + StructRseq.RSEQ_CS.offset, 8, 0)
    b.task.mm.unmap(b.layout.rodata, 4096)
    preempt(b)
    assert b.task.killed_by is None


@pytest.mark.parametrize(("kernel", "killed"), [("6.18", True), ("6.19", False)])
def test_unloaded_descriptor_without_clearing(kernel, killed):
    """The stale-rseq_cs hazard: legacy reads the descriptor on every pass and faults;
    6.19 reads it only after a user interrupt, here a migration after a syscall skips it."""
    b = registered(kernel)
    b.enter_cs()
    b.leave_cs()
    b.task.mm.unmap(b.layout.rodata, 4096)
    b.syscall(block=Placement(1, 0))
    assert (b.task.killed_by == SIGSEGV) is killed


def test_619_fast_path_fault_on_area_goes_to_slow_path_and_survives():
    """Spec §5.6: the fast path never kills; a resolvable fault is retried in the slow path."""
    b = registered("6.19")
    b.task.mm.evict(b.layout.tls, 4096)
    b.start_measuring(ftrace=False)
    b.interrupt(resched=Placement(1, 0))
    s = b.task.stats
    assert (s.fastpath, s.slowpath, s.ids) == (1, 1, 1)
    assert b.task.killed_by is None and b.area()["cpu_id"] == 1


@pytest.mark.parametrize("kernel", KERNELS)
def test_unresolvable_fault_on_area_kills(kernel):
    """Spec §5.6: an unresolvable fault in the slow path / legacy handler is SIGSEGV."""
    b = registered(kernel)
    b.task.mm.inject_fault(b.layout.area, times=10)
    b.start_measuring(ftrace=False)
    b.interrupt(resched=Placement(1, 0))
    assert b.task.killed_by == SIGSEGV
    assert b.task.stats.exit == 0  # it never returned to user space


def test_exiting_task_is_skipped():
    """PF_EXITING: no accesses, no tracepoint (spec §2.4, §3.6)."""
    for kernel in KERNELS:
        b = registered(kernel)
        b.task.exiting = True
        b.start_measuring(ftrace=False)
        b.syscall(work=lambda k, t: k.task_work_add(t))
        assert not b.task.uaccess.reads and not b.task.uaccess.writes
        assert b.task.trace.rseq_update == 0
