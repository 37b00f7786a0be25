"""Replay a recorded trace through a kernel personality.

The trace says, per task, when it entered the kernel (``sys_enter``, an
interrupt, or a switch-out outside a syscall, which means an interrupt or
exception from user mode), when it was switched out and in and on which CPU,
forks, execs, exits, signal deliveries and ``rseq()`` registrations. The
replay machine turns each of these into the generic kernel API
(``enter_from_user_mode``, ``prepare_task_switch``, ``set_task_cpu``,
``finish_task_switch_in``, ``send_signal``, ``copy_process``, ``execve``,
``do_exit``, ``task_work_add``, ``sys_rseq``) and performs the returns to user
mode the trace implies (``syscall_exit_to_user_mode`` /
``irqentry_exit_to_user_mode``). The personality decides what RSEQ work that
causes; the replay never asks which kernel it drives.

A recording with ``context_tracking:user_enter/user_exit`` (a kernel with user context tracking
on, as rseqlab's statistics kernels are) holds every entry from and return to user mode; the
replay then reads them (:meth:`Replay._run_tracked`) and infers nothing. Otherwise, when a
return to user mode happens is inferred:

* A syscall's return is *pending* from ``sys_exit`` on (the tracepoint fires
  before the exit-to-user loop). Signal deliveries and switch-outs that follow
  with no interrupt in between, and within ``SYSCALL_EXIT_WINDOW_NS``, happen
  in that same loop (``IRQ_EXIT_WINDOW_NS`` after an interrupt entry). The return is performed at the task's next entry (syscall,
  interrupt, or a switch-out that must have come from user mode), its exit, or
  the end of the trace.
* An interrupt that hits a task outside a syscall came from user mode; its
  return is pending the same way. Except: with nothing recorded since a page
  fault's entry or a signal delivery (both handled with interrupts on), within
  the syscall window, it hit the kernel there; and one whose task next shows
  the kernel (a switch-out with ``prev_state`` ``TASK_REPORT_MAX``, i.e.
  preempted in the kernel; the pending exit's own ``rseq_update``; after a tick,
  a signal delivery on a syscall's way out) hit the kernel on the way out. After ``sys_exit`` or a switch-in the rest of the exit
  runs with interrupts off unless it has work, so an interrupt then is from user.
* ``exceptions:page_fault_user`` (x86) is an exception entry from user mode and
  its return (one ``exit``).
* A forked child's first switch-in runs ``schedule_tail()``, whose
  ``set_child_tid`` store (``CLONE_CHILD_SETTID``, the recorded clone()'s
  ``child_tid``) breaks copy-on-write on that page before the first exit.

Sources of ``TIF_NOTIFY_RESUME`` that are neither switches nor signals
(measured on Linux 6.18), and how the replay models them:

* the first return after ``rseq()`` registration: from the recorded syscall;
* deferred ``fput`` after ``munmap`` drops the last reference of a file:
  file mappings are tracked from ``open``/``mmap``/``close``/``munmap``;
* the periodic mm_cid compaction task_work (``task_tick_mm_cid``): the tick
  of a task whose mm is due adds it, the next return to user runs it and
  pushes the mm's next scan ``MM_CID_SCAN_DELAY_NS`` out. A new mm starts
  with ``mm_cid_next_scan == 0``, so its first tick queues the work at once
  (observed: one pass shortly after every exec that runs a tick);
* a failed ``execve`` that reached ``bprm_execve``.

mm_cid values handed to the personalities follow 6.19's per-task ownership
(lowest free ID per mm at creation; per-CPU IDs while an mm has more live
threads than CPUs). 6.18 writes the ID whatever it is, so its counts do not
depend on this choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import BadInput
from ..kernel import Entry, Kernel, Task, Tif, Topology, make_kernel
from ..kernel._task import CLONE_VM, COUNTERS, TRACEPOINTS, RseqStats, TraceCounts
from ..usermem import PAGE_SIZE, AddressSpace
from ..machine.mmcid import MmCid
from . import sections
from .format import IrqKind, Kind, Trace
from .sections import Section
from .replaybase import (EXEC_LOOKUP_ERRORS, MAP_ANONYMOUS, MM_CID_SCAN_DELAY_NS, Fallback, KernelReplay,
                         ReplayScheduler, exit_windows, root_start_cpu, tracks_user_mode, unmap_range)
# Also importable from here (vm/validate.py and the tests import them from this module):
from .replaybase import PARTIAL_SECTIONS, RESIDUAL_SOURCES, observed, residual_sources  # noqa: F401

# x86_64 syscall numbers the replay interprets.
NR_CLOSE, NR_MMAP, NR_MUNMAP, NR_RT_SIGRETURN = 3, 9, 11, 15
NR_CLONE = 56
NR_OPEN, NR_CREAT, NR_OPENAT, NR_OPENAT2 = 2, 85, 257, 437
NR_EXECVE, NR_EXECVEAT, NR_RSEQ = 59, 322, 334
NR_EXIT, NR_EXIT_GROUP = 60, 231
#: ``sched_switch`` ``prev_state`` of a preempted task (``TASK_REPORT_MAX``, include/linux/sched.h:
#: ``__trace_sched_switch_state()`` reports it for ``__schedule(SM_PREEMPT)``): preempted in the
#: kernel (an interrupt's return to kernel mode, ``preempt_enable()``); the exit to user mode
#: calls ``schedule()``, which reports the task's state (0 when runnable).
PREEMPTED = 0x100


def clone_child_tid(nr: int | None, args: tuple[int, ...]) -> int:
    """clone()'s child TID pointer (x86_64: ``clone(flags, newsp, parent_tid, child_tid, tls)``);
    0 when the fork came from another syscall (clone3 passes it in memory) or without arguments."""
    return int(args[3]) if nr == NR_CLONE and len(args) > 3 else 0


def _slowpath_fault_number(meta: dict) -> int:
    """Which kernel fault on the rseq area, counted from the start of a return, is the slow path's
    store (the one that resolves the fault): the second where the recording kernel has the exit's
    fast path (6.19+: its store faults first, with page faults disabled, and fails), else the first
    (6.18's notify-resume handler)."""
    m = re.match(r"(\d+)\.(\d+)", str(meta.get("kernel", {}).get("release", "")))
    return 2 if m and (int(m[1]), int(m[2])) >= (6, 19) else 1


def _entry_kinds(kinds: list[int], pids: list[int], a: list[int]) -> dict[int, str]:
    """The kind of each ``user_exit`` (row -> Entry), from what its task does before it returns:
    a ``sys_enter`` makes it a syscall, a user page fault an exception, anything else (the
    return, or the task's end) an interrupt. Not the next event alone: an interrupt may hit the
    syscall entry between ``user_exit`` and ``sys_enter`` (and even preempt it there)."""
    out: dict[int, str] = {}
    decided: dict[int, str] = {}  # pid -> the kind its open entry turns out to be (scanning back)
    for i in range(len(kinds) - 1, -1, -1):
        kind, pid = kinds[i], pids[i]
        if kind == Kind.USER_EXIT:
            out[i] = decided.pop(pid, Entry.IRQ)
        elif kind == Kind.SYS_ENTER:
            decided[pid] = Entry.SYSCALL
        elif kind == Kind.IRQ and a[i] == IrqKind.PAGE_FAULT:
            decided[pid] = Entry.EXCEPTION
        elif kind == Kind.USER_ENTER or kind == Kind.EXIT:
            decided.pop(pid, None)
    return out


@dataclass(slots=True)
class _File:
    refs: int = 1


@dataclass
class _Mm:
    """Per-process state the replay keeps beside the kernel's ``AddressSpace``."""

    space: AddressSpace
    next_scan: int  # ns: the mm_cid compaction task_work is due from then on
    users: list[int] = field(default_factory=list)  # live tasks, for mm_cid
    cids: dict[int, int] = field(default_factory=dict)  # pid -> owned cid
    vmas: list[tuple[int, int, _File]] = field(default_factory=list)  # file mappings
    fds: dict[int, _File] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)  # the program's rseq critical sections
    alloc: object = None  # the scheduler's mm_cid allocator (machine/mmcid.py; tracked replay)


@dataclass
class _Rt:
    """Replay state of one task."""

    task: Task
    mm: _Mm
    syscall: int | None = None  # inside this syscall
    args: tuple[int, ...] = ()
    pending: str | None = None  # a return to user mode is due
    pending_ts: int = 0
    short_exit: bool = False  # what is left of the pending return's exit path is short
    irq_ts: int = -1  # an interrupt whose mode the task's next event decides
    irq_timer: bool = False
    cid_work: bool = False  # the mm_cid task_work is queued
    on_cpu: bool = True
    dead: bool = False
    exits: int = 0
    observed_update: int = 0
    observed_fixup: int = 0
    rseq_area: int = 0  # the registered struct rseq (0: none), and its signature
    rseq_sig: int = 0
    irq_from_user: bool = False  # the open entry is an interrupt or fault from user mode (tracked)
    exit_rseq_faults: int = 0  # kernel faults on the rseq area since the pending return began (tracked)


class Replay:
    """Drives one kernel personality with the events of one trace."""

    def __init__(self, trace: Trace, release: str) -> None:
        meta = trace.meta
        nodes = meta.get("topology", {}).get("node_of_cpu") or [0] * int(meta.get("cpus", 1))
        self.trace = trace
        self.ncpus = len(nodes)
        self.kernel: Kernel = make_kernel(release, Topology(tuple(nodes)), scheduler=ReplayScheduler())
        self.tasks: dict[int, _Rt] = {}
        self.order: list[int] = []
        self.missing_parent = 0
        self.tick_ns = 1_000_000_000 // int(meta.get("kernel", {}).get("hz") or 250)
        root = meta.get("root", {})
        self._root = int(root.get("pid", 0))
        self._root_registered = bool(root.get("rseq_registered"))
        self._root_addr = int(root.get("rseq_addr") or 0x7F00_0000_0100)
        self._root_len = int(root.get("rseq_len") or 32)

    # ------------------------------------------------------------------
    # Tasks and address spaces
    # ------------------------------------------------------------------
    def _new_mm(self, ts: int) -> _Mm:
        # A new mm has mm_cid_next_scan == 0: its first tick queues the work at once.
        return _Mm(AddressSpace(), 0)

    def _task(self, pid: int, ts: int) -> _Rt:
        rt = self.tasks.get(pid)
        if rt is None:
            # A task the trace did not see created: the recorder's child, or one whose fork was lost.
            mm = self._new_mm(ts)
            t = self.kernel.new_task(pid, mm.space, comm=self.trace.meta.get("tasks", {}).get(str(pid), "?"))
            rt = _Rt(t, mm)
            self._attach(rt, pid)
            self.tasks[pid] = rt
            self.order.append(pid)
            if pid == self._root:
                self._start_root(rt)
            else:
                self.missing_parent += 1
        return rt

    def _start_root(self, rt: _Rt) -> None:
        """The recorder's child: registered like its parent (if glibc registered), then blocked
        in the gate's ``read()`` when recording starts. Its history before that is played and
        then forgotten, so the counters start at the recording's first event."""
        k, t = self.kernel, rt.task
        t.cpu = root_start_cpu(self.trace, self._root)
        if self._root_registered:
            k.enter_from_user_mode(t, Entry.SYSCALL)
            self._register(rt, self._root_addr, self._root_len, 0x53053053)
            k.syscall_exit_to_user_mode(t)
        k.enter_from_user_mode(t, Entry.SYSCALL)
        k.prepare_task_switch(t)  # blocked in read() before tracing started
        rt.syscall = 0
        rt.on_cpu = False
        t.stats = RseqStats()
        t.trace = TraceCounts()
        t.uaccess.clear()
        k.cpu_stats = [RseqStats() for _ in k.cpu_stats]
        k.trace_totals = TraceCounts()

    def _attach(self, rt: _Rt, pid: int) -> None:
        mm = rt.mm
        mm.users.append(pid)
        used = set(mm.cids.values())
        cid = 0
        while cid in used:
            cid += 1
        mm.cids[pid] = cid
        rt.task.mm_cid = cid

    def _detach(self, rt: _Rt, pid: int) -> None:
        mm = rt.mm
        if pid in mm.users:
            mm.users.remove(pid)
            mm.cids.pop(pid, None)
            if not mm.users:
                for _, _, f in mm.vmas:
                    f.refs -= 1
                mm.vmas.clear()
                for f in mm.fds.values():
                    f.refs -= 1
                mm.fds.clear()

    def _cid(self, rt: _Rt, pid: int, cpu: int) -> int:
        mm = rt.mm
        if len(mm.users) > self.ncpus:
            return cpu  # per-CPU ownership: more threads than CPUs
        return mm.cids.get(pid, 0)

    def _register(self, rt: _Rt, addr: int, length: int, sig: int) -> int:
        rt.rseq_area, rt.rseq_sig = addr, sig
        space = rt.mm.space
        page = addr & ~(PAGE_SIZE - 1)
        end = (addr + max(length, 32) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        for p in range(page, end, PAGE_SIZE):
            if not space.is_mapped(p):
                space.map(p, PAGE_SIZE)
        return self.kernel.sys_rseq(rt.task, addr, length, 0, sig)

    # ------------------------------------------------------------------
    # Returns to user mode
    # ------------------------------------------------------------------
    def _finish(self, rt: _Rt, ts: int) -> None:
        """Perform the pending return to user mode."""
        entry = rt.pending
        rt.pending = None
        if entry is None or rt.dead:
            return
        k, t = self.kernel, rt.task
        if rt.cid_work and t.tif & Tif.NOTIFY_RESUME:
            # task_mm_cid_work(): runs in resume_user_mode_work and pushes the next scan out.
            rt.cid_work = False
            if ts >= rt.mm.next_scan:
                # jiffies + msecs_to_jiffies(100): due from the tick 100 ms after the current
                # jiffy began, which is half a tick before ts on average.
                rt.mm.next_scan = ts + MM_CID_SCAN_DELAY_NS - self.tick_ns // 2
        if entry is Entry.SYSCALL:
            k.syscall_exit_to_user_mode(t)
        else:
            k.irqentry_exit_to_user_mode(t)
        rt.exits += 1
        if t.killed_by is not None:
            rt.dead = True

    def _enter(self, rt: _Rt, entry: str, ts: int) -> None:
        if rt.pending is not None:
            self._finish(rt, ts)
        self.kernel.enter_from_user_mode(rt.task, entry)
        if entry is not Entry.SYSCALL:
            rt.pending = entry
            rt.pending_ts = ts
            rt.short_exit = entry is Entry.IRQ

    # ------------------------------------------------------------------
    # The event loop
    # ------------------------------------------------------------------
    def run(self) -> KernelReplay:
        if tracks_user_mode(self.trace):
            return self._run_tracked()
        ev = self.trace.events
        sa = self.trace.sysargs
        args_cols = [sa[f"arg{i}"] for i in range(6)]
        ts_l, cpu_l, kind_l, pid_l = ev["ts"].tolist(), ev["cpu"].tolist(), ev["kind"].tolist(), ev["pid"].tolist()
        a_l, b_l = ev["a"].tolist(), ev["b"].tolist()
        k = self.kernel
        sys_window, irq_window = exit_windows(self.trace.meta)
        SWITCH_OUT, SWITCH_IN, SYS_ENTER, SYS_EXIT = Kind.SWITCH_OUT, Kind.SWITCH_IN, Kind.SYS_ENTER, Kind.SYS_EXIT
        for i in range(len(ts_l)):
            kind, pid, ts = kind_l[i], pid_l[i], ts_l[i]
            if kind == Kind.LOST or kind == Kind.MIGRATE or kind == Kind.KERNEL_FAULT:
                continue  # switch-in CPUs are the truth; migrations are informational
            rt = self.tasks.get(pid)
            if rt is None:
                rt = self._task(pid, ts)
            if rt.dead and kind != Kind.RSEQ_UPDATE:
                continue
            t = rt.task
            if rt.irq_ts >= 0:
                # In the kernel if next comes a kernel preemption, the pending exit's own ID
                # write, or (after a tick) a signal delivery on a syscall's way out: a signal
                # pending at sys_exit is delivered before that return.
                self._irq_from_user(rt, not (kind == SWITCH_OUT and a_l[i] == PREEMPTED
                                             or kind == Kind.RSEQ_UPDATE
                                             or kind == Kind.SIGNAL and rt.irq_timer
                                             and rt.pending is Entry.SYSCALL))
            if kind == SYS_ENTER:
                self._enter(rt, Entry.SYSCALL, ts)
                j = b_l[i]
                self._syscall(rt, a_l[i], tuple(int(c[j]) for c in args_cols) if j >= 0 else ())
            elif kind == SYS_EXIT:
                if rt.pending is not None:
                    self._finish(rt, ts)  # lost sys_enter: close what was open
                self._sys_exit(rt, a_l[i], b_l[i], ts)
                rt.syscall = None
                rt.pending = Entry.SYSCALL
                rt.pending_ts = ts
                rt.short_exit = True  # interrupts are off from here unless the exit loop has work
            elif kind == SWITCH_OUT:
                if rt.syscall is None:
                    state = a_l[i]
                    window = sys_window if rt.pending is Entry.SYSCALL else irq_window
                    if rt.pending is not None and ts - rt.pending_ts > window and state != PREEMPTED:
                        self._finish(rt, ts)  # it did return; this switch-out is a new entry
                    if rt.pending is None:
                        self._enter(rt, Entry.IRQ if state == 0 else Entry.EXCEPTION, ts)
                k.prepare_task_switch(t)
                rt.on_cpu = False
            elif kind == SWITCH_IN:
                cpu = cpu_l[i]
                if cpu != t.cpu:
                    k.set_task_cpu(t, cpu)
                k.finish_task_switch_in(t, self._cid(rt, pid, cpu))
                rt.on_cpu = True
                if rt.pending is not None:
                    rt.pending_ts = ts  # the exit loop resumes now
                    rt.short_exit = True  # what is left of it after schedule() is short
            elif kind == Kind.IRQ:
                if rt.syscall is None:
                    if a_l[i] == IrqKind.PAGE_FAULT:
                        self._enter(rt, Entry.EXCEPTION, ts)  # page_fault_user: from user mode
                    elif rt.pending is None or rt.short_exit or ts - rt.pending_ts > sys_window:
                        # From user mode, unless the task's next event shows the kernel
                        # (decided there, with the tick that came with it).
                        rt.irq_ts, rt.irq_timer = ts, a_l[i] == IrqKind.TIMER
                        continue
                    else:
                        # It hit the kernel on the way out of the pending entry: no entry. A
                        # second tick there would mean a fault or frame set-up of a whole tick
                        # without a switch: the next one is taken from user mode.
                        rt.short_exit = True
                if a_l[i] == IrqKind.TIMER:
                    self._tick(rt, ts)
            elif kind == Kind.SIGNAL:
                handler = b_l[i]
                if handler > 1:  # not SIG_DFL / SIG_IGN: a handler frame is set up
                    if rt.syscall is not None:
                        rt.syscall = None  # its sys_exit was lost
                        rt.pending = Entry.SYSCALL
                        rt.pending_ts = ts
                    if rt.pending is None:
                        self._enter(rt, Entry.IRQ, ts)
                    sig = a_l[i]
                    t.handlers[sig] = handler
                    k.send_signal(t, sig)
                    rt.short_exit = False  # the frame is set up after signal_deliver
            else:
                self._task_event(rt, kind, pid, a_l[i], b_l[i], ts)
        end = int(ts_l[-1]) if ts_l else 0
        for pid in self.order:
            rt = self.tasks[pid]
            if rt.irq_ts >= 0 and not rt.dead:
                self._irq_from_user(rt, True)
            if rt.pending is not None:
                self._finish(rt, end)
        return self._result()

    def _syscall(self, rt: _Rt, nr: int, args: tuple[int, ...]) -> None:
        """What a syscall's entry tells the personality: ``rseq()`` and ``rt_sigreturn()``."""
        k, t = self.kernel, rt.task
        rt.syscall, rt.args = nr, args
        if nr == NR_RSEQ and args:
            flags = args[2] & 0xFFFF_FFFF
            if flags & 1:
                k.sys_rseq(t, args[0], args[1], flags, args[3])
                rt.rseq_area = 0
            else:
                self._register(rt, args[0], args[1] & 0xFFFF_FFFF, args[3])
        elif nr == NR_RT_SIGRETURN and t.sigframes:
            k.sigreturn(t)

    def _task_event(self, rt: _Rt, kind: int, pid: int, a: int, b: int, ts: int) -> None:
        """The events both loops play the same way: fork, exec, exit, the observed tracepoints."""
        k, t = self.kernel, rt.task
        if kind == Kind.FORK:
            self._fork(rt, a, b, ts)
        elif kind == Kind.EXEC:
            self._detach(rt, pid)
            rt.mm = self._new_mm(ts)
            k.execve(t, success=True)
            t.mm = rt.mm.space
            rt.cid_work = False
            rt.rseq_area = 0
            rt.mm.sections = self._sections_of(pid)
            self._attach(rt, pid)
        elif kind == Kind.EXIT:
            rt.pending = None
            k.do_exit(t)
            rt.dead = True
            self._detach(rt, pid)
        elif kind == Kind.RSEQ_UPDATE:
            rt.observed_update += 1
        elif kind == Kind.RSEQ_IP_FIXUP:
            rt.observed_fixup += 1

    def _run_tracked(self) -> KernelReplay:
        """The event loop of a recording with ``context_tracking`` events: nothing is inferred.

        ``user_exit`` is an entry from user mode, the first thing ``enter_from_user_mode()``
        does; its kind is what the task does before it returns (:func:`_entry_kinds`).
        ``user_enter`` is the return: ``exit_to_user_mode()`` traces it after all exit work, so
        the pending entry's exit runs there. A return still pending when the recording ends
        happened after it (and after the statistics were read): it is not played."""
        ev = self.trace.events
        sa = self.trace.sysargs
        args_cols = [sa[f"arg{i}"] for i in range(6)]
        cols = [ev[name].tolist() for name in ("ts", "cpu", "kind", "pid", "a", "b", "c")]
        entry_of = _entry_kinds(*cols[2:5])
        k = self.kernel
        slowpath_fault = _slowpath_fault_number(self.trace.meta)
        for i, (ts, cpu, kind, pid, a, b, c) in enumerate(zip(*cols)):
            if kind == Kind.LOST or kind == Kind.MIGRATE:
                continue
            rt = self.tasks.get(pid)
            if rt is None:
                rt = self._task(pid, ts)
            if rt.dead and kind != Kind.RSEQ_UPDATE:
                continue
            t = rt.task
            if kind == Kind.USER_EXIT:
                entry = entry_of[i]
                self._enter(rt, entry, ts)  # a pending return first: its user_enter was lost
                rt.exit_rseq_faults = 0
                rt.irq_from_user = entry is not Entry.SYSCALL
                if not rt.irq_from_user:
                    t.regs.ip = 0  # a syscall's IP: its return address, outside every section
            elif kind == Kind.USER_ENTER:
                rt.irq_from_user = False
                if rt.pending is None:
                    # The entry or the sys_exit before this return was lost.
                    rt.pending = Entry.SYSCALL if rt.syscall is not None else Entry.IRQ
                    rt.syscall = None
                self._finish(rt, ts)
            elif kind == Kind.SYS_ENTER:
                self._syscall(rt, a, tuple(int(col[b]) for col in args_cols) if b >= 0 else ())
            elif kind == Kind.SYS_EXIT:
                self._sys_exit(rt, a, b, ts)
                rt.syscall = None
                rt.pending = Entry.SYSCALL
                rt.pending_ts = ts
                rt.exit_rseq_faults = 0
            elif kind == Kind.KERNEL_FAULT:
                if rt.pending is not None and rt.rseq_area and rt.rseq_area <= a < rt.rseq_area + 32:
                    rt.exit_rseq_faults += 1
            elif kind == Kind.SWITCH_OUT:
                if rt.pending is not None and rt.exit_rseq_faults >= slowpath_fault:
                    # A switch after the slow path's store into the rseq area began (that store's
                    # fault is recorded first): a tick preempting the fault handling, or the work
                    # loop's schedule() for a resched the tick raised meanwhile. The slow path took
                    # the earlier event before this switch, whose event makes the rest of the exit
                    # run the fast path once more: play the work loop up to here now.
                    k.exit_to_user_mode_prepare(t)
                    rt.exit_rseq_faults = 0
                k.prepare_task_switch(t)
                self._alloc(rt, pid).switch_out(pid, t.mm_cid, cpu=t.cpu)
                rt.on_cpu = False
            elif kind == Kind.SWITCH_IN:
                if cpu != t.cpu:
                    k.set_task_cpu(t, cpu)
                alloc = self._alloc(rt, pid)
                cid = alloc.switch_in(pid, cpu)
                k.finish_task_switch_in(t, cid, alloc.last_changed)
                rt.on_cpu = True
            elif kind == Kind.FORK:
                parent_alloc = self._alloc(rt, pid)
                self._task_event(rt, kind, pid, a, b, ts)
                child = self.tasks[a]
                if child.mm is rt.mm:  # a thread (or vfork): one more user of this mm
                    parent_alloc.add_thread(a, current=pid, cpu=t.cpu)
                else:  # sched_mm_cid_fork() on a new mm: the child is its first user
                    self._alloc(child, a, cpu=t.cpu)
            elif kind == Kind.EXEC:
                self._alloc(rt, pid).exec_out(pid, t.cpu)  # sched_mm_cid_before_execve()
                self._task_event(rt, kind, pid, a, b, ts)
                rt.mm.alloc = MmCid(k.mm_cid_policy, self.ncpus)
                t.mm_cid = rt.mm.alloc.exec_in(pid, t.cpu)  # sched_mm_cid_after_execve()
            elif kind == Kind.EXIT:
                self._alloc(rt, pid).remove_thread(pid, cpu=t.cpu)  # sched_mm_cid_exit()
                self._task_event(rt, kind, pid, a, b, ts)
            elif kind == Kind.IRQ:
                if rt.irq_from_user:  # the entry's own interrupt or fault: c is where it hit user space
                    rt.irq_from_user = False
                    if c:
                        self._user_ip(rt, c)
                if a == IrqKind.TIMER:
                    self._tick(rt, ts)
                elif a == IrqKind.PAGE_FAULT and t.mm.is_cow(b):
                    # A user fault on a present copy-on-write page is a write (reads do not fault
                    # there): it breaks the sharing, so the kernel's next rseq store does not fault.
                    t.mm.fault_in(b, 1, write=True)
            elif kind == Kind.SIGNAL:
                if b > 1:  # not SIG_DFL / SIG_IGN: a handler frame is set up
                    t.handlers[a] = b
                    k.send_signal(t, a)
            else:
                self._task_event(rt, kind, pid, a, b, ts)
        return self._result()

    def _alloc(self, rt: _Rt, pid: int, cpu: int | None = None):
        """The mm's cid allocator, as the replayed kernel's scheduler has it (``mm_cid_policy``:
        6.18's per-CPU scheme, or 6.19's per-task/per-CPU ownership); a task seen first is the
        first user of its mm."""
        if rt.mm.alloc is None:
            rt.mm.alloc = MmCid(self.kernel.mm_cid_policy, self.ncpus)
            rt.mm.alloc.add_thread(pid, current=pid, cpu=rt.task.cpu if cpu is None else cpu)
        return rt.mm.alloc

    def _sections_of(self, pid: int) -> list[Section]:
        """The critical sections of the program ``pid`` exec'd (``meta["rseq_cs"]``, if recorded)."""
        path = self.trace.meta.get("exec_files", {}).get(str(pid))
        return sections.from_meta(self.trace.meta.get("rseq_cs", {}).get(path, [])) if path else []

    def _user_ip(self, rt: _Rt, ip: int) -> None:
        """An interrupt or fault hit user space at ``ip`` (recorded). Inside a critical section,
        the section has stored its descriptor into ``rseq->rseq_cs`` just before its start label:
        put that, the descriptor and the abort signature into the task's memory, so the
        personality's own check on the way out finds them. Outside, ``rseq_cs`` stays what the
        replay last knew (a stale pointer user space left since is not in the recording)."""
        t = rt.task
        t.regs.ip = ip
        sec = sections.find(rt.mm.sections, ip)
        if sec is None or not rt.rseq_area:
            return
        space = t.mm
        for addr, size in ((sec.desc, sections.DESCRIPTOR_SIZE), (sec.abort_ip - 4, 4)):
            for p in range(addr & ~(PAGE_SIZE - 1), addr + size, PAGE_SIZE):
                if not space.is_mapped(p):
                    space.map(p, PAGE_SIZE)
        for off, size, value in ((0, 4, 0), (4, 4, 0), (8, 8, sec.start_ip), (16, 8, sec.post_commit_offset),
                                 (24, 8, sec.abort_ip)):
            space.poke(sec.desc + off, size, value)
        space.poke(sec.abort_ip - 4, 4, rt.rseq_sig & 0xFFFF_FFFF)
        space.poke(rt.rseq_area + 8, 8, sec.desc)

    def _irq_from_user(self, rt: _Rt, from_user: bool) -> None:
        """Settle the interrupt held back at ``rt.irq_ts``: an entry from user mode, or one that
        hit the kernel on the way out of the pending entry (its tick is played either way)."""
        ts, rt.irq_ts = rt.irq_ts, -1
        if from_user:
            self._enter(rt, Entry.IRQ, ts)
        if rt.irq_timer:
            self._tick(rt, ts)

    def _sys_exit(self, rt: _Rt, nr: int, ret: int, ts: int) -> None:
        k, t = self.kernel, rt.task
        args = rt.args if rt.syscall == nr else ()
        if nr in (NR_EXECVE, NR_EXECVEAT) and ret < 0 and ret not in EXEC_LOOKUP_ERRORS:
            k.execve(t, success=False)
        elif nr in (NR_OPEN, NR_OPENAT, NR_OPENAT2, NR_CREAT) and ret >= 0:
            old = rt.mm.fds.pop(ret, None)
            if old is not None:
                old.refs -= 1
            rt.mm.fds[ret] = _File()
        elif nr == NR_CLOSE and ret == 0 and args:
            f = rt.mm.fds.pop(int(args[0]) & 0xFFFF_FFFF, None)
            if f is not None:
                f.refs -= 1  # close(2) puts the last reference synchronously
        elif nr == NR_MMAP and args and not (args[3] & MAP_ANONYMOUS) and 0 <= ret < (1 << 47):
            fd = int(args[4]) & 0xFFFF_FFFF
            f = rt.mm.fds.get(fd)
            if f is not None:
                length = (int(args[1]) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
                self._unmap(rt, ret, length)  # MAP_FIXED replaces what was there
                f.refs += 1
                rt.mm.vmas.append((ret, ret + length, f))
        elif nr == NR_MUNMAP and ret == 0 and args:
            length = (int(args[1]) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            if self._unmap(rt, int(args[0]), length):
                # fput() of the last reference is deferred to task_work (TWA_RESUME).
                k.task_work_add(t)

    def _unmap(self, rt: _Rt, start: int, length: int) -> bool:
        """Drop tracked file mappings in the range; True if a file lost its last reference."""
        rt.mm.vmas, last = unmap_range(rt.mm.vmas, start, length)
        return last

    def _fork(self, parent: _Rt, child_pid: int, flags: int, ts: int) -> None:
        k = self.kernel
        if flags < 0:
            flags = 0  # unknown: a process
        child = k.copy_process(parent.task, child_pid, flags, clone_child_tid(parent.syscall, parent.args))
        if flags & CLONE_VM:
            mm = parent.mm
        else:
            mm = self._new_mm(ts)
            mm.space = child.mm
            mm.sections = parent.mm.sections
            for lo, hi, f in parent.mm.vmas:
                f.refs += 1
                mm.vmas.append((lo, hi, f))
            for fd, f in parent.mm.fds.items():
                f.refs += 1
                mm.fds[fd] = f
        rt = _Rt(child, mm)
        if not flags & CLONE_VM:  # a process keeps its parent's registration, a thread starts without
            rt.rseq_area, rt.rseq_sig = parent.rseq_area, parent.rseq_sig
        rt.syscall = parent.syscall  # it returns from the same clone/fork/vfork
        rt.on_cpu = False
        self.tasks[child_pid] = rt
        self.order.append(child_pid)
        self._attach(rt, child_pid)

    def _tick(self, rt: _Rt, ts: int) -> None:
        """``task_tick_mm_cid()``: queue the compaction task_work when the mm is due."""
        if rt.cid_work or rt.task.exiting or ts < rt.mm.next_scan:
            return
        rt.cid_work = True
        self.kernel.task_work_add(rt.task)

    def _result(self) -> KernelReplay:
        k = self.kernel
        counters = k.stats().as_dict(k.counters)  # a slice build adds its five
        tps = k.trace_totals.as_dict()
        reads = writes = 0
        per_task = {}
        # A forked task starts with its parent's comm (copy_process); the recorder kept the name each
        # task last ran under, i.e. the one begin_new_exec (fs/exec.c) set after an exec.
        names = self.trace.meta.get("tasks", {})
        for pid in self.order:
            rt = self.tasks[pid]
            t = rt.task
            reads += sum(t.uaccess.reads.values())
            writes += sum(t.uaccess.writes.values())
            per_task[pid] = {"comm": names.get(str(pid), t.comm), "tgid": t.tgid, "exits": rt.exits,
                             "counters": t.stats.as_dict(),
                             "rseq_update": t.trace.rseq_update, "rseq_ip_fixup": t.trace.rseq_ip_fixup,
                             "observed_rseq_update": rt.observed_update,
                             "observed_rseq_ip_fixup": rt.observed_fixup}
        return KernelReplay(k.release, counters, tps, reads, writes, per_task)


#: What forked workers of ``replay(..., jobs=N)`` read (inherited, not pickled).
_SHARED: dict = {}


def _replay_one(rel: str) -> KernelReplay:
    from .fastreplay import Executor

    plan = _SHARED.get("plan")
    if plan is not None:
        try:
            return Executor(plan, rel).run()
        except Fallback:
            pass
    return Replay(_SHARED["trace"], rel).run()


def replay(trace: Trace, kernels: list[str], *, reference: bool = False, jobs: int = 1) -> dict[str, KernelReplay]:
    """Replay ``trace`` through each personality in ``kernels``.

    By default the array path (:mod:`.fastreplay`) runs; it gives the same results as this
    module's per-event loop (``reference=True``) and falls back to it for what it cannot
    reproduce. ``jobs > 1`` replays the kernels in parallel (forked) processes: each kernel's
    replay is independent, so the results are identical to ``jobs=1``.
    """
    if not len(trace):
        raise BadInput("the trace holds no events")
    if jobs < 1:
        raise BadInput(f"--jobs: expected a positive number, got {jobs}")
    plan = None
    if not reference:
        from .. import extras

        if not extras.have("fast"):
            import sys

            print(extras.missing_note("fast", "replaying with the reference loop (same results, slower)"),
                  file=sys.stderr)
            reference = True
    if not reference:
        from .fastreplay import Plan, mark_compiled

        try:
            plan = Plan(trace)
        except Fallback:
            plan = None
    _SHARED.update(trace=trace, plan=plan)
    try:
        if jobs == 1 or len(kernels) == 1:
            results = {rel: _replay_one(rel) for rel in kernels}
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=min(jobs, len(kernels)), mp_context=ctx) as pool:
                results = dict(zip(kernels, pool.map(_replay_one, kernels)))
        if plan is not None:
            mark_compiled()
        return results
    finally:
        _SHARED.clear()


__all__ = ["COUNTERS", "RESIDUAL_SOURCES", "TRACEPOINTS", "Replay", "observed", "replay", "residual_sources",
           "tracks_user_mode"]


def replay_file(item: tuple[str, list[str], bool]) -> dict:
    """One recording replayed through every kernel (a fan-out item for ``replay A B ...``):
    ``{"kernels": {kernel: counters}, "observed": ..., "trace": ...}`` as ``replay --json``.
    The path must name the same file where the item runs (a shared file system on a cluster)."""
    from ..report.live import replay_json
    from .format import load

    path, kernels, reference = item
    trace = load(path)
    return replay_json(trace, replay(trace, kernels, reference=reference), per_process=False)
