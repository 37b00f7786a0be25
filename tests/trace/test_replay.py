"""Replay of hand-built traces: each inference rule, on both personalities, and determinism."""

from __future__ import annotations

import numpy as np

from rseqlab.trace.format import EVENT_COLUMNS, SYSARG_COLUMNS, Kind, Trace, empty_table, save
from rseqlab.trace.replay import replay

ROOT = 100
AREA = 0x7F00_0000_0100
SIG = 0x53053053


class Builder:
    """Events of one or more tasks, in order; ``ts`` advances 1 ms per event unless given."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.args: list[tuple] = []
        self.ts = 0

    def ev(self, kind, pid=ROOT, a=0, b=0, c=0, d=0, cpu=0, dt=1_000_000):
        self.ts += dt
        self.rows.append((self.ts, cpu, int(kind), pid, a, b, c, d))
        return self

    def syscall(self, nr, ret=0, pid=ROOT, args=None, block=False, cpu=0):
        b = -1
        if args is not None:
            b = len(self.args)
            self.args.append((len(self.rows), *args, *([0] * (6 - len(args)))))
        self.ev(Kind.SYS_ENTER, pid, nr, b, cpu=cpu)
        if block:
            self.ev(Kind.SWITCH_OUT, pid, 1).ev(Kind.SWITCH_IN, pid, cpu=cpu)
        return self.ev(Kind.SYS_EXIT, pid, nr, ret, cpu=cpu)

    def trace(self) -> Trace:
        ev = empty_table(EVENT_COLUMNS, len(self.rows))
        arr = np.array(self.rows, dtype=np.int64)
        for i, name in enumerate(("ts", "cpu", "kind", "pid", "a", "b", "c", "d")):
            ev[name] = arr[:, i].astype(EVENT_COLUMNS[name])
        sa = empty_table(SYSARG_COLUMNS, len(self.args))
        if self.args:
            aa = np.array(self.args, dtype=np.uint64)
            sa["event"] = aa[:, 0].astype(np.uint32)
            for i in range(6):
                sa[f"arg{i}"] = aa[:, i + 1]
        meta = {"cpus": 2, "topology": {"node_of_cpu": [0, 0]}, "kernel": {"hz": 250},
                "root": {"pid": ROOT, "rseq_registered": False}}
        return Trace(meta, ev, sa)


def started() -> Builder:
    """The root leaves the gate, execs, registers rseq (one pass on 6.18 at that exit)."""
    b = Builder()
    b.ev(Kind.SWITCH_IN, ROOT).ev(Kind.SYS_EXIT, ROOT, 0, 2)
    b.syscall(59).ev(Kind.EXEC, ROOT)  # exec's sys_exit precedes the event in real traces; order is immaterial
    b.syscall(334, args=(AREA, 32, 0, SIG))
    return b


def counts(b: Builder):
    res = replay(b.trace(), ["6.18", "6.19"])
    return res["6.18"], res["6.19"]


def test_registration_then_plain_syscalls():
    b = started()
    for _ in range(5):
        b.syscall(39)
    old, new = counts(b)
    assert old.tracepoints["rseq_update"] == 1  # the first exit after registration
    assert new.tracepoints["rseq_update"] == 1 and new.counters["ids"] == 1


def test_blocking_syscalls_one_pass_each_on_618_none_on_619():
    b = started()
    for _ in range(10):
        b.syscall(0, block=True)
    old, new = counts(b)
    assert old.tracepoints["rseq_update"] == 11
    assert new.tracepoints["rseq_update"] == 1  # no migration, no user interrupt: nothing to do


def test_switch_in_the_exit_loop_collapses_with_the_syscall_pass():
    b = started()
    b.syscall(1)
    b.ev(Kind.SWITCH_OUT, ROOT, 0, dt=1_000).ev(Kind.SWITCH_IN, ROOT)  # preempted at the write's exit
    b.syscall(39)
    old, _ = counts(b)
    assert old.tracepoints["rseq_update"] == 2  # registration + one pass for the preempted exit


def test_late_switch_out_is_a_new_user_mode_entry():
    b = started()
    b.syscall(1)
    b.ev(Kind.SWITCH_OUT, ROOT, 0, dt=2_000_000).ev(Kind.SWITCH_IN, ROOT)  # long after: user-mode preemption
    b.syscall(39)
    old, new = counts(b)
    assert old.tracepoints["rseq_update"] == 2
    assert old.counters["exit"] == new.counters["exit"]
    assert new.counters["fastpath"] == 2  # registration, then the preemption after a user interrupt


def test_migration_costs_619_an_id_update():
    b = started()
    b.syscall(0, block=True)
    b.ev(Kind.SYS_ENTER, ROOT, 0, -1).ev(Kind.SWITCH_OUT, ROOT, 1).ev(Kind.SWITCH_IN, ROOT, cpu=1)
    b.ev(Kind.SYS_EXIT, ROOT, 0, 1, cpu=1)
    b.syscall(39, cpu=1)
    old, new = counts(b)
    assert old.tracepoints["rseq_update"] == 3
    assert new.counters["ids"] == 2


def test_signal_handler_frame_is_a_pass_on_618():
    b = started()
    for _ in range(4):
        b.syscall(62)  # kill(getpid()): delivered on this syscall's way out
        b.ev(Kind.SIGNAL, ROOT, 10, 0x401000, dt=500)
        b.syscall(15)
    old, new = counts(b)
    assert old.counters["signal"] == 4
    assert old.tracepoints["rseq_update"] == 5
    assert new.counters["signal"] == 0  # entered by a syscall: no user_irq, nothing to check


def test_munmap_of_last_file_reference_is_deferred_fput():
    b = started()
    for i in range(3):
        b.syscall(257, ret=3)
        b.syscall(9, ret=0x7000_0000, args=(0, 4096, 3, 1, 3, 0))
        b.syscall(3, args=(3,))
        b.syscall(11, args=(0x7000_0000, 4096))
    b.syscall(257, ret=3)  # and one mapping whose fd stays open: no deferred fput
    b.syscall(9, ret=0x7100_0000, args=(0, 4096, 3, 1, 3, 0))
    b.syscall(11, args=(0x7100_0000, 4096))
    b.syscall(39)
    old, new = counts(b)
    assert old.tracepoints["rseq_update"] == 1 + 3
    assert new.tracepoints["rseq_update"] == 1


def test_first_tick_of_a_new_mm_queues_the_cid_work():
    b = started()
    b.ev(Kind.IRQ, ROOT, 0)  # tick in user mode: the work is due at once
    b.ev(Kind.IRQ, ROOT, 0)  # 1 ms later: next scan not due
    b.syscall(39)
    old, _ = counts(b)
    assert old.tracepoints["rseq_update"] == 2


def test_thread_registers_itself_and_fork_child_inherits():
    b = started()
    b.ev(Kind.SYS_ENTER, ROOT, 435, -1).ev(Kind.FORK, ROOT, 101, 0x3D0F00)  # pthread_create: CLONE_VM
    b.ev(Kind.SYS_EXIT, ROOT, 435, 101)
    b.ev(Kind.SWITCH_IN, 101, cpu=1).ev(Kind.SYS_EXIT, 101, 435, 0, cpu=1)
    b.syscall(334, pid=101, args=(AREA + 0x10000, 32, 0, SIG), cpu=1)
    b.ev(Kind.SYS_ENTER, ROOT, 56, -1).ev(Kind.FORK, ROOT, 102, 0x1200011)  # fork(): no CLONE_VM
    b.ev(Kind.SYS_EXIT, ROOT, 56, 102)
    b.ev(Kind.SWITCH_IN, 102).ev(Kind.SYS_EXIT, 102, 56, 0)
    b.syscall(39, pid=102)
    b.syscall(39)
    old, new = counts(b)
    per = {pid: t["rseq_update"] for pid, t in old.per_task.items()}
    assert per == {ROOT: 1, 101: 1, 102: 1}
    assert {pid: t["rseq_update"] for pid, t in new.per_task.items()} == {ROOT: 1, 101: 1, 102: 1}


def test_user_page_faults_are_exception_returns():
    """exceptions:page_fault_user (IrqKind.PAGE_FAULT) is an entry from user mode and one return
    (one ``exit`` each); one inside a syscall cannot be from user mode and adds nothing."""
    from rseqlab.trace.format import IrqKind

    def exits(faults_in_user: int, faults_in_syscall: int):
        b = started()
        b.syscall(39)
        for _ in range(faults_in_user):
            b.ev(Kind.IRQ, ROOT, int(IrqKind.PAGE_FAULT), 0x7000_0000, 0x40_1000)
        b.ev(Kind.SYS_ENTER, ROOT, 0, -1)
        for _ in range(faults_in_syscall):
            b.ev(Kind.IRQ, ROOT, int(IrqKind.PAGE_FAULT), 0x7000_0000, 0x40_1000)
        b.ev(Kind.SYS_EXIT, ROOT, 0, 0)
        res = replay(b.trace(), ["6.18", "6.19", "7.1"])
        return {k: r.counters["exit"] for k, r in res.items()}

    base = exits(0, 0)
    assert exits(3, 0) == {k: v + 3 for k, v in base.items()}
    assert exits(0, 2) == base


def _irq_exits(*events, untimed: bool = True) -> dict[str, int]:
    """Returns to user (``exit``) after one plain syscall followed by ``events`` (kind, a, b)."""
    b = started()
    b.syscall(39)
    for kind, a, bb in events:
        b.ev(kind, ROOT, a, bb, dt=20_000)
        if kind == Kind.SWITCH_OUT:
            b.ev(Kind.SWITCH_IN, ROOT, dt=20_000)
    b.syscall(39)
    trace = b.trace()
    if untimed:
        trace.meta["replay"] = {"syscall_exit_window_ns": 1 << 50, "irq_exit_window_ns": 1 << 50}
    return {k: r.counters["exit"] for k, r in replay(trace, ["6.19", "7.1"]).items()}


def test_interrupt_after_a_syscall_return_is_from_user_unless_the_kernel_shows():
    """After sys_exit the exit path runs with interrupts off unless it has work, so an interrupt
    next is taken from user mode (one more return), unless the task's next event shows it was in
    the kernel: a preemption there (prev_state TASK_REPORT_MAX) or the exit's own rseq_update."""
    from rseqlab.trace.format import IrqKind

    base = _irq_exits()
    timer = (Kind.IRQ, int(IrqKind.TIMER), 0)
    assert _irq_exits(timer) == {k: v + 1 for k, v in base.items()}
    assert _irq_exits(timer, (Kind.SWITCH_OUT, 0x100, 0)) == base  # preempted in the kernel
    assert _irq_exits(timer, (Kind.RSEQ_UPDATE, 0, 0)) == base  # the syscall's exit wrote the IDs after it
    assert _irq_exits(timer, (Kind.SWITCH_OUT, 0, 0)) == {k: v + 1 for k, v in base.items()}


def test_tick_before_a_signal_on_a_syscalls_way_out_is_in_the_kernel():
    """kill() to itself: the signal is pending at sys_exit and is delivered in that exit loop, so a
    tick between sys_exit and signal_deliver hit the kernel. 6.19 counts `signal` only after a
    user-mode interrupt (rseq_signal_deliver: has_rseq & user_irq): 0, as the kernel counts."""
    from rseqlab.trace.format import IrqKind

    def run(with_tick: bool):
        b = started()
        b.syscall(39)
        b.syscall(62)
        if with_tick:
            b.ev(Kind.IRQ, ROOT, int(IrqKind.TIMER), dt=20_000)
        b.ev(Kind.SIGNAL, ROOT, 10, 0x40_1000, dt=20_000)
        b.syscall(15, ret=0)
        b.syscall(39)
        r = replay(b.trace(), ["6.19"])["6.19"]
        return r.counters["signal"], r.counters["exit"]

    assert run(True) == run(False) == (0, run(False)[1])


def test_interrupt_during_a_page_fault_or_signal_frame_is_in_the_kernel():
    """The fault handler and the signal frame's setup run with interrupts on: an interrupt with
    nothing else since (within the exit window; untimed under TCG) hit the kernel there."""
    from rseqlab.trace.format import IrqKind

    base = _irq_exits()
    fault, timer = (Kind.IRQ, int(IrqKind.PAGE_FAULT), 0), (Kind.IRQ, int(IrqKind.TIMER), 0)
    assert _irq_exits(fault) == {k: v + 1 for k, v in base.items()}
    assert _irq_exits(fault, timer) == {k: v + 1 for k, v in base.items()}
    # a handler does not run a whole tick without a switch: the second tick is from user mode
    assert _irq_exits(fault, timer, timer) == {k: v + 2 for k, v in base.items()}
    assert _irq_exits(fault, timer, untimed=False) == {k: v + 2 for k, v in base.items()}  # 20 us > 5 us
    sig = (Kind.SIGNAL, 10, 0x40_1000)
    assert _irq_exits(sig, timer) == _irq_exits(sig)


def _forked_child(flags: int, child_tid: int):
    """A registered root forks through clone() with ``child_tid``; the child returns once."""
    b = started()
    b.syscall(39)
    b.args.append((len(b.rows), flags, 0, 0, child_tid, 0, 0))
    b.ev(Kind.SYS_ENTER, ROOT, 56, len(b.args) - 1).ev(Kind.FORK, ROOT, 101, flags)
    b.ev(Kind.SYS_EXIT, ROOT, 56, 101)
    b.ev(Kind.SWITCH_IN, 101, cpu=0).ev(Kind.SYS_EXIT, 101, 56, 0)
    b.syscall(39, pid=101)
    res = replay(b.trace(), ["6.19", "7.1"])
    return {k: r.per_task[101]["counters"] for k, r in res.items()}


def test_glibc_fork_child_tid_store_makes_the_rseq_page_private():
    """glibc's fork: CLONE_CHILD_SETTID with a pointer on the rseq area's page. The child's
    schedule_tail() stores its TID there first, so its first exit's fast path writes the IDs."""
    got = _forked_child(0x1200011, (AREA & ~0xFFF) + 0x2D0)
    assert got["6.19"]["slowpath"] == 0 and got["6.19"]["ids"] == 1
    assert got["7.1"]["slowpath"] == 0 and got["7.1"]["ids"] == 1


def test_fork_child_tid_elsewhere_or_without_settid_faults_into_the_slow_path():
    for flags, tid in ((0x1200011, 0x5000_0000), (0x11, (AREA & ~0xFFF) + 0x2D0)):
        got = _forked_child(flags, tid)
        assert got["6.19"]["slowpath"] == 1 and got["6.19"]["ids"] == 1, (hex(flags), hex(tid))
        assert got["7.1"]["slowpath"] == 1, (hex(flags), hex(tid))


def test_replay_output_is_byte_identical(run_cli, tmp_path):
    b = started()
    for i in range(20):
        b.syscall(0, block=i % 3 == 0)
    path = tmp_path / "r.trace"
    save(b.trace(), path)
    first = run_cli("replay", str(path), "--json", "--per-process")
    second = run_cli("replay", str(path), "--json", "--per-process")
    assert first.status == 0 and first.stdout == second.stdout
    data = first.json
    assert set(data["kernels"]) == {"6.18", "6.19"}  # the default pair
    assert set(data["kernels"]["6.18"]) == {"exit", "signal", "slowpath", "fastpath", "ids", "cs", "clear",
                                            "fixup", "user_reads", "user_writes", "rseq_update", "rseq_ip_fixup"}
    assert data["observed"] == {"rseq_update": 0, "rseq_ip_fixup": 0}
    table = run_cli("replay", str(path))
    assert table.status == 0 and "id updates" in table.stdout

