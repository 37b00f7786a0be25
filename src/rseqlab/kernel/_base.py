"""The kernel code every personality shares, and the hooks where they differ.

:class:`Kernel` is the generic part of Linux that the RSEQ code hangs off:
the generic entry code (``kernel/entry/common.c``) with its exit-to-user work
loop, the scheduler's switch hooks, signal delivery, fork/exec/exit, the
membarrier RSEQ IPI, the KVM pre-guest work and the checks of ``sys_rseq``.
Each personality (``v6_18``, ``v6_19``) subclasses it and fills in the
``rseq_*`` hooks, the places where ``include/linux/rseq*.h`` and
``kernel/rseq.c`` differ between kernels. The base versions of the hooks are
the do-nothing stubs a kernel without that hook has (6.18 has no ``TIF_RSEQ``
fast path, 6.19 no work at switch-out), so the generic code never asks which
kernel it runs.

The machine drives a kernel with a small set of events (entry from user,
schedule, migration, signals, fork, ...). Scheduling decisions belong to the
machine: the exit loop calls ``self.scheduler.schedule(task)`` for
``TIF_NEED_RESCHED`` and the machine answers by calling back
:meth:`prepare_task_switch`, :meth:`set_task_cpu` and
:meth:`finish_task_switch_in`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..abi import ORIG_RSEQ_SIZE, TASK_SIZE, U32_MASK, Field, KernelAbi, RseqFlag
from ._ftrace import Ftrace, attach, models
from .arch import DEFAULT_ARCH, Arch
from ._task import (
    CLONE_CHILD_SETTID,
    CLONE_THREAD,
    COUNTERS,
    CLONE_VM,
    DEFAULT_IGNORED,
    SA_NODEFER,
    SA_RESETHAND,
    SIG_DFL,
    SIG_IGN,
    SYNCHRONOUS,
    EXIT_TO_USER_MODE_WORK,
    EXIT_TO_USER_MODE_WORK_LOOP,
    SIGNAL_NAMES,
    SYSCALL_WORK_RSEQ_SLICE,
    SIGSEGV,
    Entry,
    RseqStats,
    SignalFrame,
    Task,
    Tif,
    TraceCounts,
)

#: ``enum sig_handler`` (kernel/signal.c): how ``force_sig_info_to_task()`` treats the action.
HANDLER_CURRENT = "HANDLER_CURRENT"
HANDLER_SIG_DFL = "HANDLER_SIG_DFL"
HANDLER_EXIT = "HANDLER_EXIT"
#: ``rt_sigprocmask()`` ``how`` values; SIGKILL and SIGSTOP can never be blocked.
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIGKILL, SIGSTOP = 9, 19


@dataclass(frozen=True, slots=True)
class Topology:
    """CPUs and their NUMA nodes (``cpu_to_node``)."""

    node_of_cpu: tuple[int, ...] = (0,)
    #: ``CONFIG_NUMA`` (x86_64 distribution kernels: y). It decides what ``cpu_to_node()``
    #: of a number that is not a CPU yields, see :meth:`Kernel.cpu_to_node_any`.
    numa: bool = True

    @classmethod
    def uniform(cls, cpus: int, nodes: int = 1, *, numa: bool = True) -> Topology:
        if cpus < 1 or nodes < 1 or nodes > cpus:
            raise ValueError(f"impossible topology: {cpus} CPUs on {nodes} nodes")
        if nodes > 1 and not numa:
            raise ValueError(f"impossible topology: {nodes} nodes without CONFIG_NUMA")
        per_node = -(-cpus // nodes)
        return cls(tuple(cpu // per_node for cpu in range(cpus)), numa)

    @property
    def cpus(self) -> int:
        return len(self.node_of_cpu)

    def cpu_to_node(self, cpu: int) -> int:
        return self.node_of_cpu[cpu]


class Scheduler(Protocol):
    """What the exit loop needs from the machine: ``schedule()`` for ``TIF_NEED_RESCHED``.

    The time-slice extension (7.0+, ``CONFIG_RSEQ_SLICE_EXTENSION``) also needs a timer
    service: the monotonic clock (``ktime_get_mono_fast_ns``) and one per-CPU hrtimer
    (``hrtimer_start``/``hrtimer_try_to_cancel``, ``HRTIMER_MODE_ABS_PINNED_HARD``); when it
    expires the machine runs ``callback()`` in hard-irq context on that CPU (an interrupt of
    whatever runs there). Only a slice-extension kernel calls these.
    """

    def schedule(self, task: Task) -> None: ...

    def ktime_get_mono_fast_ns(self) -> int: ...

    def hrtimer_start(self, cpu: int, expires_ns: int, callback: Callable[[], None]) -> None: ...

    def hrtimer_try_to_cancel(self, cpu: int) -> bool: ...


class StayOnCpu:
    """A scheduler with nothing else to run: ``schedule()`` keeps the task, no switch.

    Its clock stands still at 0 and its timers never fire: a grant never expires by itself.
    """

    def schedule(self, task: Task) -> None:
        task.tif &= ~Tif.NEED_RESCHED

    def ktime_get_mono_fast_ns(self) -> int:
        return 0

    def hrtimer_start(self, cpu: int, expires_ns: int, callback: Callable[[], None]) -> None:
        pass

    def hrtimer_try_to_cancel(self, cpu: int) -> bool:
        return False


@dataclass(slots=True)
class TraceEvent:
    """One tracepoint hit, with the fields the kernel's event records."""

    name: str
    pid: int
    fields: dict[str, int] = field(default_factory=dict)


#: ``TIF_SLICE_EXT_DENY`` (kernel/entry/common.c, non-RT): every exit work bit except the
#: reschedule request prevents a time-slice extension grant (``TIF_RSEQ`` included).
TIF_SLICE_EXT_DENY = EXIT_TO_USER_MODE_WORK & ~Tif.NEED_RESCHED


class Kernel:
    """Generic kernel code plus the RSEQ hooks a personality overrides."""

    #: The release this personality models, e.g. ``"6.19"``.
    release = ""
    #: One line for ``--list-kernels`` style listings.
    summary = ""
    #: Empty for a real kernel; the what-if variant's name otherwise (``kernel/whatif.py``).
    variant = ""
    abi: KernelAbi
    #: How the scheduler hands out mm_cids (see ``machine/mmcid.py``).
    mm_cid_policy = "percpu-recent"
    #: Period of the tick-driven mm_cid compaction task_work (None: the kernel has none).
    mm_cid_scan_period_ns: int | None = None
    #: The architecture it is built for (``kernel/arch.py``); ``kernel_class("6.19@arm64")``
    #: makes a subclass with another one.
    arch: Arch = DEFAULT_ARCH
    #: The release whose arch answers apply when it differs from ``release``: an alias built for
    #: another architecture (``7.0.10@arm64`` runs 7.1's rseq code on 7.0.10's arm64 entry).
    arch_release: str | None = None
    #: The statistics counters this build has (``CONFIG_RSEQ_SLICE_EXTENSION`` adds five).
    counters: tuple[str, ...] = COUNTERS

    @property
    def ftrace(self) -> Ftrace | None:
        """The call-graph log, if one is attached (``rseqlab explain``)."""
        return self._ftrace

    @ftrace.setter
    def ftrace(self, log: Ftrace | None) -> None:
        self._ftrace = log
        attach(self, log)

    @property
    def name(self) -> str:
        name = f"{self.release}:{self.variant}" if self.variant else self.release
        return name if self.arch is DEFAULT_ARCH else f"{name}@{self.arch.name}"

    def __init__(self, topology: Topology | None = None, *, debug: bool = False,
                 scheduler: Scheduler | None = None) -> None:
        self.topology = topology or Topology()
        #: What this release looks like on ``self.arch`` (generic entry or not, ...).
        self.archcfg = self.arch.config(self.arch_release or self.release)
        #: 6.18: ``CONFIG_DEBUG_RSEQ``; 6.19: the ``rseq_debug_enabled`` static key.
        self.debug = debug
        self.scheduler: Scheduler = scheduler or StayOnCpu()
        self.cpu_stats = [RseqStats() for _ in range(self.topology.cpus)]
        self.trace_totals = TraceCounts()
        self.trace_subscribers: list[Callable[[TraceEvent], None]] = []
        self._ftrace: Ftrace | None = None

    # ==================================================================
    # Statistics, tracepoints, user access: one line at the place of the event
    # ==================================================================
    def stat_inc(self, t: Task, counter: str) -> None:
        """Models ``rseq_stat_inc()``: a per-CPU counter; the model also keeps it per task."""
        setattr(t.stats, counter, getattr(t.stats, counter) + 1)
        cpu_stats = self.cpu_stats[t.cpu]
        setattr(cpu_stats, counter, getattr(cpu_stats, counter) + 1)

    def stats(self) -> RseqStats:
        """The debugfs ``stats`` readout: the sum over all CPUs."""
        total = RseqStats()
        for per_cpu in self.cpu_stats:
            total.add(per_cpu)
        return total

    def debugfs_stats(self) -> str:
        """``cat /sys/kernel/debug/rseq/stats``: this build's counters (the slice ones only with
        ``CONFIG_RSEQ_SLICE_EXTENSION``, as ``rseq_stats_show()`` prints them)."""
        return self.stats().debugfs(self.counters)

    def trace_rseq_update(self, t: Task, cpu_id: int, node_id: int | None, mm_cid: int) -> None:
        """Models ``trace_rseq_update()`` (include/trace/events/rseq.h)."""
        t.trace.rseq_update += 1
        self.trace_totals.rseq_update += 1
        self._emit(t, "rseq_update", {"cpu_id": cpu_id, "node_id": node_id, "mm_cid": mm_cid})

    def trace_rseq_ip_fixup(self, t: Task, ip: int, start_ip: int, post_commit_offset: int,
                            abort_ip: int) -> None:
        """Models ``trace_rseq_ip_fixup()`` (include/trace/events/rseq.h)."""
        t.trace.rseq_ip_fixup += 1
        self.trace_totals.rseq_ip_fixup += 1
        self._emit(t, "rseq_ip_fixup", {"regs_ip": ip, "start_ip": start_ip,
                                        "post_commit_offset": post_commit_offset, "abort_ip": abort_ip})

    def _emit(self, t: Task, name: str, fields: dict[str, int | None]) -> None:
        if self._ftrace is not None:
            self._ftrace.event(f"tracepoint rseq:{name} " + " ".join(
                f"{k}={'undefined' if v is None else format(v, '#x')}" for k, v in fields.items()))
        for subscriber in self.trace_subscribers:
            subscriber(TraceEvent(name, t.pid, fields))

    def get_user(self, t: Task, addr: int, size: int, label: str) -> int | None:
        """Models ``get_user()``/``unsafe_get_user()``: ``None`` means the access faulted."""
        value = t.mm.read(addr, size, faults_allowed=not t.pagefault_disabled)
        (t.uaccess.faults if value is None else t.uaccess.reads)[label] += 1
        if self._ftrace is not None:
            self._log_access("R", label, value, size)
        return value

    def put_user(self, t: Task, addr: int, size: int, value: int, label: str) -> bool:
        """Models ``put_user()``/``unsafe_put_user()``: False means the access faulted."""
        done = t.mm.write(addr, size, value, faults_allowed=not t.pagefault_disabled)
        (t.uaccess.writes if done else t.uaccess.faults)[label] += 1
        if self._ftrace is not None:
            self._log_access("W", label, value if done else None, size)
        return done

    def get_rseq_field(self, t: Task, f: Field) -> int | None:
        return self.get_user(t, t.rseq.usrptr + f.offset, f.size, f.name)

    def put_rseq_field(self, t: Task, f: Field, value: int) -> bool:
        return self.put_user(t, t.rseq.usrptr + f.offset, f.size, value, f.name)

    def _log_access(self, kind: str, label: str, value: int | None, size: int) -> None:
        """One user access in the call-graph log (callers call it only while a log is attached)."""
        shown = "FAULT" if value is None else f"{value:#x}" if size <= 8 else f"<{size} bytes>"
        self._ftrace.event(f"{kind} {label} {'->' if kind == 'R' else '<-'} {shown}")

    def note(self, text: str) -> None:
        if self._ftrace is not None:
            self._ftrace.event(text)

    @contextmanager
    def pagefault_disable(self, t: Task):
        """Models ``pagefault_disable()``: a fault fails the access instead of being resolved."""
        t.pagefault_disabled += 1
        try:
            yield
        finally:
            t.pagefault_disabled -= 1

    def cpu_to_node(self, cpu: int) -> int:
        return self.topology.cpu_to_node(cpu)

    def cpu_to_node_any(self, cpu: int) -> int | None:
        """``cpu_to_node()`` of any int, as the ``rseq_update`` event calls it on the cached CPU.

        x86_64 (``arch/x86/include/asm/topology.h``, ``include/linux/topology.h``,
        ``include/asm-generic/topology.h``, 6.19 and 7.1): without ``CONFIG_NUMA`` it is the
        generic macro that ignores its argument, so 0. With it, x86 selects
        ``USE_PERCPU_NUMA_NODE_ID`` and ``cpu_to_node(cpu)`` is ``per_cpu(numa_node, cpu)``
        (``__cpu_to_node()``'s ``per_cpu(x86_cpu_to_node_map, cpu)`` under
        ``DEBUG_PER_CPU_MAPS``): for -1 that indexes ``__per_cpu_offset[-1]``, the word
        before the array, so the value is whatever the linker placed there. The source does
        not determine it; the model returns None ("undefined") rather than invent one.
        """
        if 0 <= cpu < self.topology.cpus:
            return self.topology.cpu_to_node(cpu)
        return None if self.topology.numa else 0

    def rseq_stats_show(self) -> str | None:
        """The text of ``/sys/kernel/debug/rseq/stats``; None: the kernel has no such file."""
        return None

    # ==================================================================
    # Generic entry code (kernel/entry/common.c, include/linux/entry-common.h)
    # ==================================================================
    def enter_from_user_mode(self, t: Task, entry: str, nr: int = -1) -> None:
        """A task leaves user mode through a syscall (number ``nr``), an interrupt or an exception."""
        t.in_user = False
        if entry is not Entry.SYSCALL:
            self.irqentry_enter_from_user_mode(t)
        elif t.syscall_work:
            self.syscall_trace_enter(t, nr)

    @models("syscall_trace_enter", "include/linux/entry-common.h")
    def syscall_trace_enter(self, t: Task, nr: int) -> None:
        """Syscall entry work (after syscall user dispatch, before ptrace and seccomp)."""
        if t.syscall_work & SYSCALL_WORK_RSEQ_SLICE:
            self.rseq_syscall_enter_work(t, nr)

    @models("irqentry_enter_from_user_mode", "kernel/entry/common.c")
    def irqentry_enter_from_user_mode(self, t: Task) -> None:
        self.rseq_note_user_irq_entry(t)

    @models("syscall_exit_to_user_mode", "include/linux/entry-common.h")
    def syscall_exit_to_user_mode(self, t: Task) -> bool:
        """Return from a syscall. False if the task died instead of returning."""
        self.rseq_debug_syscall_return(t)
        if t.killed_by is None:
            self.exit_to_user_mode_prepare(t)
        if t.killed_by is not None:
            return False
        self.rseq_syscall_exit_to_user_mode(t)
        t.in_user = True
        return True

    @models("irqentry_exit_to_user_mode", "kernel/entry/common.c")
    def irqentry_exit_to_user_mode(self, t: Task) -> bool:
        """Return from an interrupt or exception taken in user mode."""
        self.exit_to_user_mode_prepare(t)
        if t.killed_by is not None:
            return False
        self.rseq_irqentry_exit_to_user_mode(t)
        t.in_user = True
        return True

    def exit_to_user_mode(self, t: Task, entry: str) -> bool:
        if entry is Entry.SYSCALL:
            return self.syscall_exit_to_user_mode(t)
        return self.irqentry_exit_to_user_mode(t)

    def exit_to_user_mode_prepare(self, t: Task) -> None:
        """Models ``__exit_to_user_mode_prepare()``: the work loop runs only if a work bit is set."""
        ti_work = t.tif
        if ti_work & EXIT_TO_USER_MODE_WORK:
            self.exit_to_user_mode_loop(t, ti_work)

    @models("exit_to_user_mode_loop", "kernel/entry/common.c")
    def exit_to_user_mode_loop(self, t: Task, ti_work: int) -> int:
        """The outer loop: 6.19 re-runs the work loop when the RSEQ fast path wants the slow path."""
        while True:
            ti_work = self._exit_to_user_mode_loop(t, ti_work)
            if t.killed_by is not None:
                return ti_work
            if not self.rseq_exit_to_user_mode_restart(t, ti_work):
                return ti_work
            ti_work = t.tif

    def _exit_to_user_mode_loop(self, t: Task, ti_work: int) -> int:
        """Models ``__exit_to_user_mode_loop()``: one pass per snapshot of the TIF bits.

        The snapshot matters: a ``schedule()`` in one pass sets
        ``TIF_NOTIFY_RESUME`` (6.18), which the next pass handles (spec §2.3).
        """
        while ti_work & EXIT_TO_USER_MODE_WORK_LOOP:
            if ti_work & Tif.NEED_RESCHED:
                # 7.0+: a granted time-slice extension skips schedule(); any other work denies it.
                if not self.rseq_grant_slice_extension(t, ti_work & TIF_SLICE_EXT_DENY):
                    self.scheduler.schedule(t)
            if ti_work & Tif.SIGPENDING:
                self.arch_do_signal_or_restart(t)
                if t.killed_by is not None:
                    return ti_work
            if ti_work & Tif.NOTIFY_RESUME:
                self.resume_user_mode_work(t, regs=True)
            ti_work = t.tif
        return ti_work

    @models("resume_user_mode_work", "include/linux/resume_user_mode.h")
    def resume_user_mode_work(self, t: Task, *, regs: bool) -> None:
        """Clears ``TIF_NOTIFY_RESUME``, runs task_work and friends, then the rseq handler.

        ``regs`` is False for the KVM/hyperv call before guest entry
        (``resume_user_mode_work(NULL)``).
        """
        t.tif &= ~Tif.NOTIFY_RESUME
        self.rseq_handle_notify_resume(t, regs=regs)

    def bulk_round_trips(self, t: Task, n: int, entry: str) -> bool:
        """``n`` kernel round trips (fast syscalls or minor faults) that found nothing pending.

        The caller guarantees that no work was pending while they ran (anything
        that raises work cuts the burst at that instant). Such a trip does no
        rseq work on any kernel: only ``exit`` is counted (6.19's ``user_irq``
        is set at entry and cleared at exit), so they are counted at once. The
        one exception is a debug check that runs on every syscall exit.
        """
        if n <= 0:
            return True
        if self.debug and entry is Entry.SYSCALL:
            for done in range(n):
                self.rseq_debug_syscall_return(t)
                if t.tif & EXIT_TO_USER_MODE_WORK:  # the check forced SIGSEGV: a full exit
                    t.stats.exit += done
                    self.cpu_stats[t.cpu].exit += done
                    self.exit_to_user_mode_prepare(t)
                    return t.killed_by is None
        t.stats.exit += n
        self.cpu_stats[t.cpu].exit += n
        return True

    # ==================================================================
    # Scheduler hooks (kernel/sched/core.c), called by the machine
    # ==================================================================
    @models("prepare_task_switch", "kernel/sched/core.c")
    def prepare_task_switch(self, prev: Task) -> None:
        """``prev`` is about to be switched out (preempted or blocking)."""
        self.rseq_preempt(prev)

    @models("set_task_cpu", "kernel/sched/core.c")
    def set_task_cpu(self, t: Task, new_cpu: int) -> None:
        """The scheduler moves an off-CPU task; callers only call it for a real change."""
        old_cpu = t.cpu
        t.cpu = new_cpu
        self.rseq_set_task_cpu(t, changed=old_cpu != new_cpu)

    @models("context_switch", "kernel/sched/core.c")
    def finish_task_switch_in(self, t: Task, mm_cid: int, raw_changed: bool | None = None) -> None:
        """``t`` is switched in on ``t.cpu``; the mm_cid switch hands it ``mm_cid``
        (``task_mm_cid()``). ``raw_changed``: whether ``mm_cid_update_task_cid()`` saw the
        raw cid (with ``MM_CID_ONCPU``/``MM_CID_TRANSIT``) change; None when the caller has
        no raw value (the bench, the replay), then the user-visible cid is compared."""
        self.mm_cid_switch_in(t, mm_cid, raw_changed)
        self.rseq_sched_switch_event(t)
        if t.ret_from_fork:
            t.ret_from_fork = False
            self.schedule_tail(t)

    @models("schedule_tail", "kernel/sched/core.c")
    def schedule_tail(self, t: Task) -> None:
        """A new task's first switch-in goes on (after ``finish_task_switch()``) to store its
        TID at ``set_child_tid`` with page faults enabled; the result is not checked. The store
        breaks copy-on-write on that page: for glibc's fork it is the page of ``struct pthread``'s
        ``tid``, which also holds the rseq area, so the first exit's rseq writes find it private."""
        if t.set_child_tid:
            self.put_user(t, t.set_child_tid, 4, t.pid, "set_child_tid")

    def mm_cid_switch_in(self, t: Task, mm_cid: int, raw_changed: bool | None = None) -> None:
        """The mm_cid a task gets at schedule-in; 6.19 also notes a change for rseq."""
        t.mm_cid = mm_cid

    # ==================================================================
    # Signals (kernel/signal.c, arch/x86/kernel/signal.c)
    # ==================================================================
    def send_signal(self, t: Task, sig: int) -> None:
        """Make a signal pending; it is acted on in the exit-to-user loop.

        Models ``send_signal_locked()``: ``prepare_signal()`` drops a signal the
        task ignores (``SIG_IGN``, or ``SIG_DFL`` with an ignoring default) unless
        it is blocked, since the handler may change before it is unblocked
        (``sig_ignored()``); standard signals are a set, not a queue: one already
        pending absorbs the new one (``legacy_queue()``); ``complete_signal()``
        wakes the task (``TIF_SIGPENDING``) only if the signal is not blocked.
        """
        if sig not in t.blocked and self.sig_task_ignored(t, sig):
            self.note(f"{SIGNAL_NAMES.get(sig, sig)} ignored: not queued")
            return
        if sig not in t.pending:
            t.pending.append(sig)
        self.recalc_sigpending(t)

    @staticmethod
    def sig_task_ignored(t: Task, sig: int) -> bool:
        """Models ``sig_task_ignored()``: ignored by disposition or by default."""
        handler = t.handlers.get(sig, SIG_DFL)
        return handler == SIG_IGN or (handler == SIG_DFL and sig in DEFAULT_IGNORED)

    @staticmethod
    def recalc_sigpending(t: Task) -> None:
        """Models ``recalc_sigpending()``: ``TIF_SIGPENDING`` iff an unblocked signal is pending."""
        if any(sig not in t.blocked for sig in t.pending):
            t.tif |= Tif.SIGPENDING
        else:
            t.tif &= ~Tif.SIGPENDING

    def set_current_blocked(self, t: Task, blocked) -> None:
        """Models ``set_current_blocked()`` (sigprocmask, sigreturn); SIGKILL/SIGSTOP stay unblocked."""
        t.blocked = set(blocked) - {SIGKILL, SIGSTOP}
        self.recalc_sigpending(t)

    @models("force_sig_info_to_task", "kernel/signal.c")
    def force_sig_info_to_task(self, t: Task, sig: int, handler: str) -> None:
        """Send a signal the task cannot ignore or block (kernel/signal.c, 6.19 and 7.1 alike).

        ``handler`` is ``HANDLER_CURRENT`` (``force_sig()``: an installed, unblocked
        handler still runs), ``HANDLER_SIG_DFL`` (``force_fatal_sig()``) or
        ``HANDLER_EXIT`` (``force_exit_sig()``). If the signal is blocked or ignored,
        or the mode is not ``HANDLER_CURRENT``, the process-wide action is reset
        to ``SIG_DFL`` and a blocked signal is unblocked, so a handler that user
        space had blocked never runs: the default action (death, for SIGSEGV) does.
        """
        name = SIGNAL_NAMES.get(sig, sig)
        blocked = sig in t.blocked
        ignored = t.handlers.get(sig, SIG_DFL) == SIG_IGN
        if blocked or ignored or handler != HANDLER_CURRENT:
            t.handlers.pop(sig, None)  # sa_handler = SIG_DFL, for every thread sharing sighand
            t.sa_flags.pop(sig, None)
            t.blocked.discard(sig)
            self.note(f"{name}: action reset to SIG_DFL" + (", unblocked" if blocked else ""))
        self.send_signal(t, sig)

    @models("force_sig", "kernel/signal.c")
    def force_sig(self, t: Task, sig: int = SIGSEGV) -> None:
        """Models ``force_sig()``: ``force_sig_info_to_task(HANDLER_CURRENT)``, catchable."""
        self.note(f"force_sig({SIGNAL_NAMES.get(sig, sig)})")
        self.force_sig_info_to_task(t, sig, HANDLER_CURRENT)

    @models("force_fatal_sig", "kernel/signal.c")
    def force_fatal_sig(self, t: Task, sig: int) -> None:
        """Models ``force_fatal_sig()``: ``HANDLER_SIG_DFL``, the default action always."""
        self.note(f"force_fatal_sig({SIGNAL_NAMES.get(sig, sig)})")
        self.force_sig_info_to_task(t, sig, HANDLER_SIG_DFL)

    @models("force_sigsegv", "kernel/signal.c")
    def force_sigsegv(self, t: Task, sig: int) -> None:
        """SIGSEGV for a failure while delivering ``sig``: fatal only if ``sig`` is SIGSEGV itself,
        so a failing SIGSEGV delivery cannot recurse; otherwise an ordinary ``force_sig()``."""
        if sig == SIGSEGV:
            self.force_fatal_sig(t, SIGSEGV)
        else:
            self.force_sig(t, SIGSEGV)

    def dequeue_signal(self, t: Task) -> int | None:
        """Models ``dequeue_signal()``/``next_signal()``: the lowest unblocked synchronous
        signal (SIGSEGV, SIGBUS, ...) first, else the lowest-numbered unblocked one."""
        ready = [sig for sig in t.pending if sig not in t.blocked]
        if not ready:
            return None
        sync = [sig for sig in ready if sig in SYNCHRONOUS]
        sig = min(sync or ready)
        t.pending.remove(sig)
        return sig

    @models("arch_do_signal_or_restart", "arch/x86/kernel/signal.c")
    def arch_do_signal_or_restart(self, t: Task) -> None:
        """``get_signal()``: skip ignored signals, act on the first other one, then stop."""
        while True:
            sig = self.dequeue_signal(t)
            if sig is None:
                self.recalc_sigpending(t)
                return
            handler = t.handlers.get(sig, SIG_DFL)
            if handler == SIG_IGN or (handler == SIG_DFL and sig in DEFAULT_IGNORED):
                continue
            self.recalc_sigpending(t)
            if handler == SIG_DFL:
                self.do_exit(t, killed_by=sig)  # do_group_exit(): the default action is fatal
                return
            if t.sa_flags.get(sig, 0) & SA_RESETHAND:  # SA_ONESHOT
                t.handlers.pop(sig, None)
                t.sa_flags.pop(sig, None)
            self.handle_signal(t, sig, handler)
            return

    @models("handle_signal", "arch/x86/kernel/signal.c")
    def handle_signal(self, t: Task, sig: int, handler: int) -> None:
        """``setup_rt_frame()`` runs rseq first, so an abort lands in the saved context; then the
        frame saves the IP and the mask, and ``signal_delivered()`` blocks ``sa_mask`` and,
        without ``SA_NODEFER``, the signal itself while the handler runs. A failure of the
        rseq part queues SIGSEGV (``force_sigsegv(sig)``) but the frame is still set up."""
        self.rseq_signal_deliver(t, sig)
        t.sigframes.append(SignalFrame(sig, t.regs.ip, frozenset(t.blocked)))
        t.regs.ip = handler
        blocked = set(t.blocked) | set(t.sa_mask.get(sig, ()))
        if not t.sa_flags.get(sig, 0) & SA_NODEFER:
            blocked.add(sig)
        self.set_current_blocked(t, blocked)

    def sigreturn(self, t: Task) -> None:
        """``rt_sigreturn()``: restore the interrupted context and signal mask from the newest frame."""
        frame = t.sigframes.pop()
        t.regs.ip = frame.saved_ip
        self.set_current_blocked(t, frame.saved_blocked)

    def sigprocmask(self, t: Task, how: int, sigs) -> frozenset[int]:
        """``rt_sigprocmask()``: ``SIG_BLOCK``, ``SIG_UNBLOCK`` or ``SIG_SETMASK``; returns the old mask."""
        old = frozenset(t.blocked)
        sigs = set(sigs)
        if how == SIG_BLOCK:
            new = old | sigs
        elif how == SIG_UNBLOCK:
            new = old - sigs
        elif how == SIG_SETMASK:
            new = sigs
        else:
            raise ValueError(f"sigprocmask: bad how {how}")
        self.set_current_blocked(t, new)
        return old

    def sigaction(self, t: Task, sig: int, handler: int, *, flags: int = 0, mask=()) -> None:
        """``rt_sigaction()``: set the process-wide action; ignoring discards a pending one
        (``do_sigaction()`` flushes it from every thread's queue)."""
        if handler == SIG_DFL:
            t.handlers.pop(sig, None)
            t.sa_flags.pop(sig, None)
            t.sa_mask.pop(sig, None)
        else:
            t.handlers[sig] = handler
            t.sa_flags[sig] = flags
            t.sa_mask[sig] = frozenset(mask)

    # ==================================================================
    # Process lifetime (kernel/fork.c, fs/exec.c, kernel/exit.c)
    # ==================================================================
    @models("copy_process", "kernel/fork.c")
    def copy_process(self, parent: Task, child_pid: int, clone_flags: int = 0, child_tid: int = 0) -> Task:
        """fork/clone: the child starts on the parent's CPU, about to return from the syscall.
        ``child_tid``: clone()'s child TID pointer, kept as ``set_child_tid`` with CLONE_CHILD_SETTID."""
        mm = parent.mm if clone_flags & CLONE_VM else parent.mm.fork()
        child = Task(child_pid, mm, tgid=parent.tgid if clone_flags & CLONE_THREAD else child_pid,
                     cpu=parent.cpu, mm_cid=parent.mm_cid, comm=parent.comm)
        child.regs.ip = parent.regs.ip
        child.in_user = False
        child.set_child_tid = child_tid if clone_flags & CLONE_CHILD_SETTID else 0
        child.ret_from_fork = True  # its first switch-in ends in schedule_tail()
        if clone_flags & CLONE_THREAD:  # CLONE_SIGHAND: one action table for the thread group
            child.handlers, child.sa_flags, child.sa_mask = parent.handlers, parent.sa_flags, parent.sa_mask
        else:
            child.handlers, child.sa_flags = dict(parent.handlers), dict(parent.sa_flags)
            child.sa_mask = dict(parent.sa_mask)
        child.blocked = set(parent.blocked)
        # dup_task_struct() copies thread_info: pending RSEQ work bits come along.
        child.tif = parent.tif & (Tif.NOTIFY_RESUME | Tif.RSEQ)
        self.rseq_fork(child, parent, clone_flags)
        # sched_cgroup_fork() and wake_up_new_task() both place the new task.
        self.rseq_set_task_cpu(child, changed=True)
        self.rseq_set_task_cpu(child, changed=True)
        return child

    @models("bprm_execve", "fs/exec.c")
    def execve(self, t: Task, *, success: bool = True) -> None:
        if success:
            # flush_signal_handlers(): handled signals go back to SIG_DFL, SIG_IGN stays.
            for sig in [s for s, h in t.handlers.items() if h != SIG_IGN]:
                t.handlers.pop(sig)
                t.sa_flags.pop(sig, None)
                t.sa_mask.pop(sig, None)
            self.rseq_execve(t)
        else:
            self.rseq_execve_failed(t)

    @models("do_exit", "kernel/exit.c")
    def do_exit(self, t: Task, *, killed_by: int | None = None) -> None:
        t.exiting = True
        t.killed_by = killed_by if killed_by is not None else 0
        self.note(f"task {t.pid} exits" + (f" ({SIGNAL_NAMES.get(killed_by, killed_by)})" if killed_by else ""))

    # ==================================================================
    # Other sources of exit work
    # ==================================================================
    def task_work_add(self, t: Task) -> None:
        """``task_work_add(TWA_RESUME)`` and friends: ``TIF_NOTIFY_RESUME`` with no rseq event."""
        t.tif |= Tif.NOTIFY_RESUME

    @models("ipi_rseq", "kernel/sched/membarrier.c")
    def ipi_rseq(self, t: Task) -> None:
        """The membarrier ``PRIVATE_EXPEDITED_RSEQ`` IPI handler on ``t``'s CPU."""
        self.rseq_membarrier_ipi(t)

    @models("xfer_to_guest_mode_handle_work", "kernel/entry/virt.c")
    def kvm_enter_guest(self, t: Task) -> None:
        """A vCPU thread about to enter the guest handles ``TIF_NOTIFY_RESUME`` with no regs."""
        if t.tif & Tif.NOTIFY_RESUME:
            self.resume_user_mode_work(t, regs=False)

    # ==================================================================
    # sys_rseq (kernel/rseq.c): the checks both kernels make, in their order
    # ==================================================================
    def rseq_registered(self, t: Task) -> bool:
        return bool(t.rseq.usrptr)

    @models("sys_rseq", "kernel/rseq.c")
    def sys_rseq(self, t: Task, rseq: int, rseq_len: int, flags: int, sig: int) -> int:
        """Register or unregister ``t``'s rseq area. Returns 0 or ``-errno`` (spec §1.4)."""
        flags &= U32_MASK  # a C int: -1 has every bit set
        rseq_len &= U32_MASK
        sig &= U32_MASK
        state = t.rseq
        if flags & RseqFlag.UNREGISTER:
            # int(): ~ of a one-member IntFlag is RseqFlag(0), not "every other bit".
            if flags & ~int(RseqFlag.UNREGISTER):
                return -errno.EINVAL
            if not state.usrptr or state.usrptr != rseq:
                return -errno.EINVAL
            if rseq_len != state.len:
                return -errno.EINVAL
            if sig != state.sig:
                return -errno.EPERM
            return self.rseq_unregister(t)
        if flags & ~self.abi.register_flags:  # 7.0+ also accepts RSEQ_FLAG_SLICE_EXT_DEFAULT_ON
            return -errno.EINVAL
        if state.usrptr:
            # Re-registration: a different area is a bug, the same one is EBUSY.
            if state.usrptr != rseq or state.len != rseq_len:
                return -errno.EINVAL
            if state.sig != sig:
                return -errno.EPERM
            return -errno.EBUSY
        # The original 32-byte size needs its own 32-byte alignment; any other size
        # must be AT_RSEQ_ALIGN aligned and cover AT_RSEQ_FEATURE_SIZE.
        if (rseq_len < ORIG_RSEQ_SIZE
                or (rseq_len == ORIG_RSEQ_SIZE and rseq % ORIG_RSEQ_SIZE)
                or (rseq_len != ORIG_RSEQ_SIZE
                    and (rseq % self.abi.align or rseq_len < self.abi.feature_size))):
            return -errno.EINVAL
        if not access_ok(rseq, rseq_len):
            return -errno.EFAULT
        return self.rseq_register(t, rseq, rseq_len, sig, flags)

    # ==================================================================
    # RSEQ hooks: stubs here, filled in by the personalities
    # ==================================================================
    def new_rseq_state(self) -> Any:
        raise NotImplementedError

    def rseq_register(self, t: Task, rseq: int, rseq_len: int, sig: int, flags: int = 0) -> int:
        raise NotImplementedError

    def rseq_unregister(self, t: Task) -> int:
        raise NotImplementedError

    def rseq_note_user_irq_entry(self, t: Task) -> None:
        """An interrupt or exception from user mode (6.19 records it)."""

    def rseq_preempt(self, t: Task) -> None:
        """Switch-out of ``t`` (6.18 raises its work here)."""

    def rseq_set_task_cpu(self, t: Task, *, changed: bool) -> None:
        """``t`` was placed on a CPU (migration, or a new task)."""

    def rseq_sched_switch_event(self, t: Task) -> None:
        """Switch-in of ``t`` (6.19 raises its work here)."""

    def rseq_membarrier_ipi(self, t: Task) -> None:
        """The membarrier RSEQ IPI interrupted ``t``."""

    def rseq_grant_slice_extension(self, t: Task, work_pending: int) -> bool:
        """Exit loop, resched pending: True grants a time-slice extension instead of
        ``schedule()`` (7.0+ with ``CONFIG_RSEQ_SLICE_EXTENSION``; never without)."""
        return False

    def rseq_syscall_enter_work(self, t: Task, nr: int) -> None:
        """Syscall entry with ``SYSCALL_WORK_SYSCALL_RSEQ_SLICE`` set (slice extension only)."""

    def sys_prctl(self, t: Task, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
                  arg5: int = 0) -> int:
        """``prctl()`` (kernel/sys.c) as far as rseq goes: kernels before 7.0 have no
        ``PR_RSEQ_SLICE_EXTENSION`` case, so the option is unknown: ``-EINVAL``."""
        return -errno.EINVAL

    def sys_rseq_slice_yield(self, t: Task) -> int:
        """Syscall 471: not in the table before 7.0, and ``COND_SYSCALL`` without the slice
        extension (``kernel/sys_ni.c``): ``-ENOSYS``."""
        return -errno.ENOSYS

    def rseq_signal_deliver(self, t: Task, sig: int) -> None:
        """A handler frame for ``sig`` is about to be set up."""

    def rseq_handle_notify_resume(self, t: Task, *, regs: bool) -> None:
        """The rseq part of ``resume_user_mode_work()``."""

    def rseq_exit_to_user_mode_restart(self, t: Task, ti_work: int) -> bool:
        """After the work loop: True asks for another loop round (6.19 fast path)."""
        return False

    def rseq_syscall_exit_to_user_mode(self, t: Task) -> None:
        """Last rseq step of a syscall return."""
        self.stat_inc(t, "exit")

    def rseq_irqentry_exit_to_user_mode(self, t: Task) -> None:
        """Last rseq step of an interrupt or exception return."""
        self.stat_inc(t, "exit")

    def rseq_debug_syscall_return(self, t: Task) -> None:
        """The debug check of a syscall return for a section left armed."""

    def rseq_fork(self, child: Task, parent: Task, clone_flags: int) -> None:
        raise NotImplementedError

    def rseq_execve(self, t: Task) -> None:
        raise NotImplementedError

    def rseq_execve_failed(self, t: Task) -> None:
        """The execve failure path re-raises the rseq work."""

    # ==================================================================
    def new_task(self, pid: int, mm, *, cpu: int = 0, mm_cid: int = 0, comm: str = "task") -> Task:
        """A fresh, unregistered task (as after execve)."""
        t = Task(pid, mm, cpu=cpu, mm_cid=mm_cid, comm=comm)
        t.rseq = self.new_rseq_state()
        return t


def access_ok(addr: int, size: int) -> bool:
    """Models ``access_ok()``: the whole range lies below ``TASK_SIZE``."""
    return 0 <= addr and addr + size <= TASK_SIZE
